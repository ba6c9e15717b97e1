"""Splits of several shards: windows drawn over all of them by size, never across a seam, the same
batches whether gathered from the arrays in place or from a device copy, resumable exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.data.samplers import RandomBatchSampler, evaluation_batches
from bench.data.shards import DeviceTokens, HostTokens, TokenShards, split_tokens, to_device


def _shards(sizes=(300, 1200, 40, 500)) -> TokenShards:
    # Shard i holds i * 10_000 + position, so every id says which shard and where it came from.
    return TokenShards([np.arange(n, dtype=np.int64) + i * 10_000 for i, n in enumerate(sizes)])


def test_windows_never_straddle_a_seam_and_follow_the_shard():
    sampler = RandomBatchSampler(_shards(), batch_size=64, seq_len=32, seed=0)
    for _ in range(20):
        x, y = sampler.next_batch()
        window = torch.cat([x, y[:, -1:]], dim=1)
        shard = window // 10_000
        assert torch.equal(shard, shard[:, :1].expand_as(shard)), "a window crossed two shards"
        assert torch.equal(window[:, 1:] - window[:, :-1], torch.ones_like(window[:, 1:]))


def test_shards_are_drawn_in_proportion_to_their_windows():
    sizes = (300, 1200, 40, 500)
    sampler = RandomBatchSampler(_shards(sizes), batch_size=4000, seq_len=32, seed=1)
    x, _ = sampler.next_batch()
    counts = np.bincount((x[:, 0] // 10_000).numpy(), minlength=len(sizes))
    expected = np.array([n - 32 for n in sizes]) / sum(n - 32 for n in sizes)
    assert np.allclose(counts / counts.sum(), expected, atol=0.02)


def test_one_shard_draws_exactly_the_windows_bench_always_drew():
    # start ~ U[0, n - seq_len) from the sampler's generator: the quickstart's batches are unchanged.
    tokens = torch.arange(1000, dtype=torch.int32)
    sampler = RandomBatchSampler(tokens, batch_size=8, seq_len=16, seed=3)
    generator = torch.Generator().manual_seed(3)
    for _ in range(3):
        starts = torch.randint(0, 1000 - 16, (8,), generator=generator)
        x, y = sampler.next_batch()
        assert torch.equal(x[:, 0], starts) and torch.equal(y[:, -1], starts + 16)


def test_host_arrays_and_a_device_copy_give_the_same_batches():
    shards = TokenShards([np.arange(n, dtype=np.uint16) * 3 % 251 for n in (700, 90, 1500)])
    host = RandomBatchSampler(shards, batch_size=16, seq_len=24, seed=7)
    device = RandomBatchSampler(to_device(split_tokens(shards), torch.device("cpu")), batch_size=16, seq_len=24,
                                seed=7)
    assert isinstance(host.tokens, HostTokens) and isinstance(device.tokens, DeviceTokens)
    for _ in range(5):
        for a, b in zip(host.next_batch(), device.next_batch()):
            assert a.dtype == b.dtype == torch.int64
            assert torch.equal(a, b)
    a = list(evaluation_batches(shards, seq_len=24, batch_size=5, limit=17))
    b = list(evaluation_batches(device.tokens, seq_len=24, batch_size=5, limit=17))
    assert all(torch.equal(p, q) for pa, pb in zip(a, b) for p, q in zip(pa, pb))


def test_host_arrays_are_not_copied():
    array = np.arange(5000, dtype=np.uint16)
    split = split_tokens(TokenShards([array]))
    assert split.arrays[0] is array


def test_sampling_is_deterministic_and_resumes_exactly():
    first = RandomBatchSampler(_shards(), batch_size=6, seq_len=20, seed=5)
    for _ in range(3):
        first.next_batch()
    state = first.state_dict()
    expected = [first.next_batch() for _ in range(4)]
    resumed = RandomBatchSampler(_shards(), batch_size=6, seq_len=20, seed=123)
    resumed.load_state_dict(state)
    for (x, y), (ex, ey) in zip((resumed.next_batch() for _ in range(4)), expected):
        assert torch.equal(x, ex) and torch.equal(y, ey)
    again = RandomBatchSampler(_shards(), batch_size=6, seq_len=20, seed=5)
    replay = [again.next_batch() for _ in range(7)][3:]
    assert all(torch.equal(a[0], b[0]) for a, b in zip(replay, expected))


def test_shards_shorter_than_a_window_are_skipped_and_none_long_enough_is_an_error():
    sampler = RandomBatchSampler(TokenShards([np.arange(5), np.arange(100) + 10_000]), batch_size=50, seq_len=10,
                                 seed=0)
    assert bool((sampler.next_batch()[0] >= 10_000).all())
    with pytest.raises(ValueError, match="cannot fill one sequence"):
        RandomBatchSampler(TokenShards([np.arange(5), np.arange(8)]), batch_size=2, seq_len=10, seed=0)
