"""Batches for training (random windows) and evaluation (every token exactly once)."""

from __future__ import annotations

from typing import Iterator

import torch


class RandomBatchSampler:
    """Random ``(x, y)`` windows of ``seq_len`` tokens, ``y`` shifted by one.

    Draws window starts from its own generator, so the batch stream depends only on the seed
    and how many batches were drawn; ``state_dict`` captures exactly that.
    """

    def __init__(self, tokens: torch.Tensor, batch_size: int, seq_len: int, seed: int):
        if tokens.numel() < seq_len + 1:
            raise ValueError(f"{tokens.numel()} training tokens cannot fill one sequence of "
                             f"seq_len {seq_len}; lower seq_len or use more data")
        self.tokens = tokens
        self.batch_size = batch_size
        self.seq_len = seq_len
        self.generator = torch.Generator().manual_seed(seed)
        self._offsets = torch.arange(seq_len + 1)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        high = self.tokens.numel() - self.seq_len
        starts = torch.randint(0, high, (self.batch_size,), generator=self.generator)
        index = (starts[:, None] + self._offsets).to(self.tokens.device, non_blocking=True)
        window = self.tokens[index].long()
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


def evaluation_batches(tokens: torch.Tensor, seq_len: int, batch_size: int, stride: int | None = None
                       ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(x, y)`` batches of the windows of :func:`sequential_windows`, consecutive windows of one
    shape stacked ``batch_size`` at a time (a shorter last window comes alone, unpadded). Targets
    that a window sees but does not score are set to :data:`IGNORE`."""
    pending: list[int] = []
    shape = (0, 0)  # no window has this shape; pending is empty until the first one
    for start, length, scored in sequential_windows(tokens.numel(), seq_len, stride):
        if pending and ((length, scored) != shape or len(pending) == batch_size):
            yield _stack(tokens, pending, *shape)
            pending = []
        shape = (length, scored)
        pending.append(start)
    if pending:
        yield _stack(tokens, pending, *shape)


def _stack(tokens: torch.Tensor, starts: list[int], length: int, scored: int
           ) -> tuple[torch.Tensor, torch.Tensor]:
    index = torch.tensor(starts)[:, None] + torch.arange(length + 1)
    window = tokens[index.to(tokens.device)].long()
    x, y = window[:, :-1], window[:, 1:]
    if scored < length:
        y = y.clone()
        y[:, : length - scored] = IGNORE
    return x, y
