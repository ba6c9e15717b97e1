"""The prefetching sampler hands out the plain sampler's batches and resumes exactly."""

from __future__ import annotations

import pytest
import torch

from bench.data.prefetch import PrefetchingSampler
from bench.data.samplers import RandomBatchSampler

TOKENS = torch.arange(500, dtype=torch.int32)


def plain() -> RandomBatchSampler:
    return RandomBatchSampler(TOKENS, batch_size=3, seq_len=8, seed=5)


def test_same_batches_as_the_plain_sampler_and_exact_resume():
    base = plain()
    reference = [base.next_batch() for _ in range(7)]
    ahead = PrefetchingSampler(plain(), torch.device("cpu"), pin=False)
    got = [ahead.next_batch() for _ in range(4)]
    state = ahead.state_dict()  # after 4 batches handed out, although a 5th was already drawn
    resumed = PrefetchingSampler(plain(), torch.device("cpu"), pin=False)
    resumed.load_state_dict(state)
    got += [resumed.next_batch() for _ in range(3)]
    for (x, y), (rx, ry) in zip(got, reference):
        assert torch.equal(x, rx) and torch.equal(y, ry)
    plain_state = plain()
    for _ in range(4):
        plain_state.next_batch()
    assert torch.equal(state["generator"], plain_state.state_dict()["generator"])


def test_changing_the_batch_size_drops_the_prefetched_batch():
    ahead = PrefetchingSampler(plain(), torch.device("cpu"), pin=False)
    ahead.next_batch()
    ahead.batch_size = 2  # an out-of-memory retry halves the micro-batch
    x, _ = ahead.next_batch()
    reference = plain()
    reference.next_batch()
    reference.batch_size = 2
    assert x.shape[0] == 2 and torch.equal(x, reference.next_batch()[0])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_pinned_copies_arrive_on_the_device():
    ahead = PrefetchingSampler(plain(), torch.device("cuda"), pin=True)
    x, y = ahead.next_batch()
    assert x.is_cuda and torch.equal(x.cpu(), plain().next_batch()[0])
