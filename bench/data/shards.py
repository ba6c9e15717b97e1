"""A split's token ids as one or more shards, read where they lie.

Two places a split can be:

* :class:`HostTokens`: the arrays as the dataset gave them (an ``np.memmap`` stays a memmap, a
  plugin's ``uint16`` array stays that array). Nothing is copied when the split is opened; a batch
  reads only its own windows, each row copied once, straight into the ``int64`` batch. Used on the
  CPU always, and on CUDA for a corpus too large for the device (see
  :func:`bench.data.loading.place_split`).
* :class:`DeviceTokens`: every shard concatenated into one ``int32`` tensor on the device, so
  batches are gathered where they are used; only for corpora that fit a share of free GPU memory.

Both gather the same windows to the same values: where a split lives never changes a batch.

A window never straddles two shards: shard files are separate documents streams (llm.c shards
each start with an end-of-text token), so a window across the seam would join text that never
followed each other. Windows are addressed as ``(shard, start)`` pairs.
"""

from __future__ import annotations

import mmap
from typing import Sequence

import numpy as np
import torch


class TokenShards:
    """What a dataset plugin may return as a split instead of one array: several 1-D integer arrays
    (memmaps, typically), in order. Nothing is copied or concatenated; ``names`` say where each
    shard came from (file names), for messages."""

    def __init__(self, arrays: Sequence[np.ndarray], names: Sequence[str] | None = None):
        for array in arrays:
            if not (isinstance(array, np.ndarray) and array.ndim == 1 and np.issubdtype(array.dtype, np.integer)):
                raise TypeError(f"TokenShards holds 1-D integer numpy arrays, got {type(array).__name__}")
        self.arrays = list(arrays)
        self.names = list(names) if names is not None else [f"shard {i}" for i in range(len(self.arrays))]

    def __len__(self) -> int:
        return sum(len(a) for a in self.arrays)

    @property
    def lengths(self) -> list[int]:
        return [len(a) for a in self.arrays]


class HostTokens:
    """Shards in host memory (or mapped from disk), gathered row by row into ``int64`` batches.

    For a memory-mapped shard, a batch first asks the kernel for the pages of all its rows
    (``madvise(MADV_WILLNEED)``, which starts their reads without waiting), then copies the rows:
    on a cold page cache the batch's reads overlap instead of queueing one page fault after another.
    On a warm cache it costs one system call per row."""

    def __init__(self, arrays: Sequence[np.ndarray]):
        self.arrays = list(arrays)
        self.lengths = [len(a) for a in self.arrays]
        self.device = torch.device("cpu")
        self._maps = [_mapping(a) for a in self.arrays]

    def numel(self) -> int:
        return sum(self.lengths)

    def gather(self, shard: torch.Tensor, start: torch.Tensor, length: int) -> torch.Tensor:
        """``(B, length)`` int64: row ``i`` is ``shards[shard[i]][start[i] : start[i] + length]``."""
        out = np.empty((len(start), length), dtype=np.int64)
        rows = list(zip(shard.tolist(), start.tolist()))
        for s, a in rows:
            mapped = self._maps[s]
            if mapped is not None:
                mapping, offset, itemsize = mapped
                first, end = offset + a * itemsize, offset + (a + length) * itemsize
                first -= first % mmap.PAGESIZE
                mapping.madvise(mmap.MADV_WILLNEED, first, end - first)
        # One slice per row: reads only those pages of a memmap and converts while copying. Faster
        # than fancy indexing for long windows, and as fast for short ones (see benchmarks/results).
        for row, (s, a) in enumerate(rows):
            out[row] = self.arrays[s][a: a + length]
        return torch.from_numpy(out)


def _mapping(array: np.ndarray) -> tuple[mmap.mmap, int, int] | None:
    """``(the mmap under array, array's byte offset in it, itemsize)``, or None for memory arrays."""
    base: object = array
    while base is not None and not isinstance(base, mmap.mmap):
        base = getattr(base, "base", None)
    if not isinstance(base, mmap.mmap) or not hasattr(base, "madvise") or not array.flags.c_contiguous:
        return None
    start = np.frombuffer(base, dtype=np.uint8).__array_interface__["data"][0]
    return base, array.__array_interface__["data"][0] - start, array.itemsize


class DeviceTokens:
    """Every shard in one ``int32`` tensor (int32 halves int64's footprint and holds any vocabulary;
    batches are widened to int64 as they are gathered)."""

    def __init__(self, tokens: torch.Tensor, lengths: Sequence[int] | None = None):
        self.tokens = tokens
        self.lengths = list(lengths) if lengths is not None else [tokens.numel()]
        self.device = tokens.device
        self._first = torch.tensor([0, *np.cumsum(self.lengths)[:-1].tolist()], dtype=torch.int64)
        self._offsets: dict[int, torch.Tensor] = {}

    def numel(self) -> int:
        return self.tokens.numel()

    def gather(self, shard: torch.Tensor, start: torch.Tensor, length: int) -> torch.Tensor:
        offsets = self._offsets.get(length)
        if offsets is None:
            offsets = self._offsets[length] = torch.arange(length)
        starts = start if len(self.lengths) == 1 else self._first[shard] + start
        index = (starts[:, None] + offsets).to(self.device, non_blocking=True)
        return self.tokens[index].long()


SplitTokens = HostTokens | DeviceTokens


def split_tokens(value: torch.Tensor | np.ndarray | TokenShards | HostTokens | DeviceTokens) -> SplitTokens:
    """The trainer's view of a split: a tensor stays where it is, arrays are read in place."""
    if isinstance(value, (HostTokens, DeviceTokens)):
        return value
    if isinstance(value, torch.Tensor):
        return DeviceTokens(value)
    if isinstance(value, TokenShards):
        return HostTokens(value.arrays)
    return HostTokens([np.asarray(value)])


def to_device(split: SplitTokens, device: torch.device) -> DeviceTokens:
    """One ``int32`` device tensor of every shard, copied a shard at a time (never the whole corpus
    as int64 or twice on the host)."""
    if isinstance(split, DeviceTokens):
        return DeviceTokens(split.tokens.to(device), split.lengths)
    tokens = torch.empty(split.numel(), dtype=torch.int32, device=device)
    at = 0
    for array in split.arrays:
        tokens[at: at + len(array)] = torch.from_numpy(np.asarray(array, dtype=np.int32))
        at += len(array)
    return DeviceTokens(tokens, split.lengths)
