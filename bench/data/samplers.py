"""Batches for training (random windows) and evaluation (every token exactly once, or a fixed subset).

Both work on a split of one or more shards (:mod:`bench.data.shards`) and never let a window
straddle two shards: each shard is windowed on its own.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import torch

from bench.data.shards import SplitTokens, split_tokens


class RandomBatchSampler:
    """Random ``(x, y)`` windows of ``seq_len`` tokens, ``y`` shifted by one.

    A window is drawn uniformly from every window of ``seq_len + 1`` tokens that lies inside one
    shard, so shards are weighted by their size (their count of windows). With one shard this is
    exactly ``start ~ U[0, n - seq_len)``, as bench has always drawn. Starts come from the
    sampler's own generator, so the batch stream depends only on the seed and how many batches
    were drawn, not on where the tokens are (host or device); ``state_dict`` captures exactly that.
    """

    def __init__(self, tokens: Any, batch_size: int, seq_len: int, seed: int):
        self.tokens: SplitTokens = split_tokens(tokens)
        per_shard = [max(n - seq_len, 0) for n in self.tokens.lengths]
        self.windows = sum(per_shard)
        if self.windows < 1:
            raise ValueError(f"{self.tokens.numel()} training tokens ({len(per_shard)} shard(s)) cannot fill one "
                             f"sequence of seq_len {seq_len}; lower seq_len or use more data")
        self.batch_size = batch_size
        self.seq_len = seq_len
        self.generator = torch.Generator().manual_seed(seed)
        ends = np.cumsum(per_shard)
        self._ends = torch.tensor(ends.tolist(), dtype=torch.int64)  # window ids below ends[i] are in shards <= i
        self._firsts = torch.tensor([0, *ends[:-1].tolist()], dtype=torch.int64)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        drawn = torch.randint(0, self.windows, (self.batch_size,), generator=self.generator)
        if len(self._ends) == 1:
            shard, start = torch.zeros_like(drawn), drawn
        else:
            shard = torch.searchsorted(self._ends, drawn, right=True)
            start = drawn - self._firsts[shard]
        window = self.tokens.gather(shard, start, self.seq_len + 1)
        return window[:, :-1], window[:, 1:]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.generator.set_state(state["generator"])


def sequential_windows(n_tokens: int, seq_len: int, stride: int | None = None
                       ) -> Iterator[tuple[int, int, int]]:
    """``(start, length, scored)`` windows: inputs ``tokens[start : start+length]``, targets one to the
    right, and only the last ``scored`` targets count. Every token from position 1 to the end is
    scored exactly once (token 0 has no context, so it is never a target).

    ``stride`` = ``seq_len`` (the default) gives non-overlapping windows, each starting without
    context. A smaller stride slides each window ``stride`` tokens on and scores only its new
    targets, so every target after the first window sees at least ``seq_len - stride`` tokens of
    context; the last window may be shorter.
    """
    stride = stride or seq_len
    if not 0 < stride <= seq_len:
        raise ValueError(f"eval_stride must be between 1 and seq_len ({seq_len}), got {stride}")
    start, scored_up_to = 0, 0  # the last target index scored so far
    while scored_up_to < n_tokens - 1:
        length = min(seq_len, n_tokens - 1 - start)
        end = start + length  # this window's last target index
        yield start, length, end - scored_up_to
        scored_up_to = end
        start += stride


IGNORE = -100  # the target value cross_entropy skips (its default ignore_index)


# A validation split up to this many tokens is scored whole by default (every split bench shipped
# before bounded evaluation was far smaller); a larger one gets AUTO_EVAL_TOKENS // seq_len windows.
AUTO_EVAL_TOKENS = 1 << 22


def window_limit(setting: int, n_tokens: int, seq_len: int) -> int:
    """How many windows an evaluation pass scores, from the ``val_windows``/``test_windows`` key:
    ``-1`` every window, ``N > 0`` a fixed subset of ``N``, ``0`` (auto) every window of a split of
    at most :data:`AUTO_EVAL_TOKENS` tokens, else a fixed subset of ``AUTO_EVAL_TOKENS // seq_len``.
    Returns ``0`` for "every window"."""
    if setting > 0:
        return setting
    if setting < 0 or n_tokens <= AUTO_EVAL_TOKENS:
        return 0
    return max(1, AUTO_EVAL_TOKENS // seq_len)


def window_count(n_tokens: int, seq_len: int, stride: int | None = None) -> int:
    """How many windows :func:`sequential_windows` yields, without yielding them."""
    stride = stride or seq_len
    if n_tokens < 2:
        return 0
    return 1 + -(-max(0, n_tokens - 1 - seq_len) // stride)


def window_at(n_tokens: int, seq_len: int, stride: int | None, k: int) -> tuple[int, int, int]:
    """The ``k``-th ``(start, length, scored)`` window of :func:`sequential_windows`, computed directly."""
    stride = stride or seq_len
    start = k * stride
    end = start + min(seq_len, n_tokens - 1 - start)
    previous_end = 0 if k == 0 else min((k - 1) * stride + seq_len, n_tokens - 1)
    return start, end - start, end - previous_end


def evaluation_windows(lengths: list[int], seq_len: int, stride: int | None = None, limit: int = 0
                       ) -> Iterator[tuple[int, int, int, int]]:
    """``(shard, start, length, scored)``: every window of every shard (:func:`sequential_windows`, one
    shard after the other), or with ``0 < limit <`` their number, ``limit`` of them evenly spaced over
    the whole split: window ``floor(i * K / limit)`` for ``i < limit`` of the ``K`` windows in order.
    The subset depends only on the shard sizes, ``seq_len``, the stride and ``limit``: every pass
    scores the same windows, so validation curves compare point by point (as llm.c's fixed
    validation batches do), and it spans every shard rather than only the split's first tokens."""
    counts = [window_count(n, seq_len, stride) for n in lengths]
    total = sum(counts)
    if limit <= 0 or limit >= total:
        for shard, n in enumerate(lengths):
            for start, length, scored in sequential_windows(n, seq_len, stride):
                yield shard, start, length, scored
        return
    ends = np.cumsum(counts)
    for i in range(limit):
        k = i * total // limit
        shard = int(np.searchsorted(ends, k, side="right"))
        first = int(ends[shard - 1]) if shard else 0
        yield (shard, *window_at(lengths[shard], seq_len, stride, k - first))


def scored_targets(lengths: list[int], seq_len: int, stride: int | None = None, limit: int = 0) -> int:
    """How many targets an evaluation pass with these settings scores."""
    if limit <= 0:
        return sum(max(n - 1, 0) for n in lengths)
    return sum(w[3] for w in evaluation_windows(lengths, seq_len, stride, limit))


def evaluation_batches(tokens: Any, seq_len: int, batch_size: int, stride: int | None = None, limit: int = 0
                       ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(x, y)`` batches of the windows of :func:`evaluation_windows`, consecutive windows of one
    shape stacked ``batch_size`` at a time (a shorter last window comes alone, unpadded). Targets
    that a window sees but does not score are set to :data:`IGNORE`."""
    split = split_tokens(tokens)
    pending: list[tuple[int, int]] = []
    shape = (0, 0)  # no window has this shape; pending is empty until the first one
    for shard, start, length, scored in evaluation_windows(split.lengths, seq_len, stride, limit):
        if pending and ((length, scored) != shape or len(pending) == batch_size):
            yield _stack(split, pending, *shape)
            pending = []
        shape = (length, scored)
        pending.append((shard, start))
    if pending:
        yield _stack(split, pending, *shape)


def _stack(split: SplitTokens, windows: list[tuple[int, int]], length: int, scored: int
           ) -> tuple[torch.Tensor, torch.Tensor]:
    shard, start = torch.tensor(windows, dtype=torch.int64).unbind(1)
    window = split.gather(shard, start, length + 1)
    x, y = window[:, :-1], window[:, 1:]
    if scored < length:
        y = y.clone()
        y[:, : length - scored] = IGNORE
    return x, y
