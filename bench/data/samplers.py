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


def sequential_windows(n_tokens: int, seq_len: int) -> Iterator[tuple[int, int]]:
    """``(start, length)`` windows whose targets ``tokens[start+1 : start+1+length]`` cover every
    token from position 1 to the end exactly once; the last window may be shorter.
    (Token 0 has no context, so it is never a target.)"""
    start = 0
    while start + 1 < n_tokens:
        length = min(seq_len, n_tokens - 1 - start)
        yield start, length
        start += length


def evaluation_batches(tokens: torch.Tensor, seq_len: int, batch_size: int
                       ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Non-overlapping ``(x, y)`` batches from :func:`sequential_windows`. Full-length windows are
    stacked ``batch_size`` at a time; a final short window comes alone, unpadded."""
    full, tail = [], None
    for start, length in sequential_windows(tokens.numel(), seq_len):
        if length == seq_len:
            full.append(start)
        else:
            tail = (start, length)
    offsets = torch.arange(seq_len + 1)
    for i in range(0, len(full), batch_size):
        starts = torch.tensor(full[i:i + batch_size])
        window = tokens[(starts[:, None] + offsets).to(tokens.device)].long()
        yield window[:, :-1], window[:, 1:]
    if tail is not None:
        start, length = tail
        window = tokens[start:start + length + 1].long()[None]
        yield window[:, :-1], window[:, 1:]
