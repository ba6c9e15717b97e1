import pytest
import torch

from bench.data.samplers import IGNORE, RandomBatchSampler, evaluation_batches, sequential_windows


@pytest.mark.parametrize("stride_fraction", [None, 1.0, 0.5, 0.25])
def test_sequential_windows_score_every_target_once(stride_fraction):
    for n_tokens in (2, 17, 64, 65, 100, 1001):
        for seq_len in (1, 7, 16, 64):
            stride = max(1, int(seq_len * stride_fraction)) if stride_fraction else None
            targets = []
            for index, (start, length, scored) in enumerate(sequential_windows(n_tokens, seq_len, stride)):
                assert 1 <= scored <= length <= seq_len
                first_scored = start + 1 + length - scored
                targets.extend(range(first_scored, start + 1 + length))
                if index and stride:  # every scored target sees at least seq_len - stride tokens before it
                    assert first_scored - start >= min(seq_len - stride, n_tokens) or start == 0
            assert targets == list(range(1, n_tokens))


def test_default_windows_do_not_overlap():
    windows = list(sequential_windows(100, 16))
    assert all(scored == length for _, length, scored in windows)
    assert [start for start, _, _ in windows] == list(range(0, 99, 16))


def test_strided_batches_mask_the_context_targets():
    tokens = torch.arange(40, dtype=torch.int32)
    scored = []
    for x, y in evaluation_batches(tokens, seq_len=8, batch_size=2, stride=4):
        assert torch.equal(x[:, 1:][y[:, :-1] != IGNORE], y[:, :-1][y[:, :-1] != IGNORE])
        scored.extend(y[y != IGNORE].tolist())
    assert sorted(scored) == list(range(1, 40))


def test_stride_must_fit_the_window():
    with pytest.raises(ValueError, match="eval_stride"):
        list(sequential_windows(100, 8, 9))


def test_evaluation_batches_keep_the_short_tail_unpadded():
    tokens = torch.arange(50, dtype=torch.int32)
    seen = []
    shapes = []
    for x, y in evaluation_batches(tokens, seq_len=8, batch_size=3):
        assert torch.equal(y[:, :-1], x[:, 1:])  # y is x shifted by one
        shapes.append(tuple(y.shape))
        seen.extend(y.flatten().tolist())
    assert sorted(seen) == list(range(1, 50))
    assert shapes == [(3, 8), (3, 8), (1, 1)]


def test_random_batches_are_reproducible_and_resumable():
    tokens = torch.arange(1000, dtype=torch.int32)
    first = RandomBatchSampler(tokens, batch_size=4, seq_len=10, seed=3)
    x1, y1 = first.next_batch()
    assert torch.equal(y1[:, :-1], x1[:, 1:])
    state = first.state_dict()
    x2, _ = first.next_batch()
    second = RandomBatchSampler(tokens, batch_size=4, seq_len=10, seed=99)
    second.load_state_dict(state)
    assert torch.equal(second.next_batch()[0], x2)
