import numpy as np
import pytest
import torch

from bench.data.samplers import (
    AUTO_EVAL_TOKENS,
    IGNORE,
    RandomBatchSampler,
    evaluation_batches,
    evaluation_windows,
    scored_targets,
    sequential_windows,
    window_at,
    window_count,
    window_limit,
)


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


def test_window_count_and_window_at_agree_with_sequential_windows():
    for n_tokens in (0, 1, 2, 9, 17, 100, 257):
        for seq_len, stride in ((16, 16), (16, 5), (8, 1), (50, 50)):
            windows = list(sequential_windows(n_tokens, seq_len, stride))
            assert window_count(n_tokens, seq_len, stride) == len(windows)
            assert [window_at(n_tokens, seq_len, stride, k) for k in range(len(windows))] == windows


def test_bounded_evaluation_scores_the_same_evenly_spread_windows_every_time():
    lengths = [1000, 37, 2000, 500]
    first = list(evaluation_windows(lengths, seq_len=16, stride=8, limit=20))
    assert first == list(evaluation_windows(lengths, seq_len=16, stride=8, limit=20))
    everything = list(evaluation_windows(lengths, seq_len=16, stride=8))
    assert len(first) == 20 and set(first) <= set(everything)
    positions = [everything.index(w) for w in first]
    assert positions == sorted(positions) and positions[0] == 0
    assert {w[0] for w in first} >= {0, 2, 3}, "the subset spans the shards, not just the first tokens"
    gaps = np.diff(positions)
    assert gaps.max() - gaps.min() <= 1
    assert scored_targets(lengths, 16, 8, limit=20) == sum(w[3] for w in first)
    assert scored_targets(lengths, 16, 8) == sum(n - 1 for n in lengths) == sum(w[3] for w in everything)
    # a limit at or above the number of windows is the full pass
    assert list(evaluation_windows(lengths, 16, 8, limit=10**6)) == everything


def test_window_limit_defaults_to_the_full_pass_for_small_splits():
    assert window_limit(0, AUTO_EVAL_TOKENS, 64) == 0
    assert window_limit(0, AUTO_EVAL_TOKENS + 1, 64) == AUTO_EVAL_TOKENS // 64
    assert window_limit(-1, 10 * AUTO_EVAL_TOKENS, 64) == 0
    assert window_limit(20, 100, 64) == 20
