import torch

from bench.data.samplers import RandomBatchSampler, evaluation_batches, sequential_windows


def test_sequential_windows_cover_every_target_once():
    for n_tokens in (2, 17, 64, 65, 100, 1001):
        for seq_len in (1, 7, 16, 64):
            targets = []
            for start, length in sequential_windows(n_tokens, seq_len):
                assert 1 <= length <= seq_len
                targets.extend(range(start + 1, start + 1 + length))
            assert targets == list(range(1, n_tokens))


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
