"""Training batches from host memory, copied to the device one step ahead (``pin_memory = true``).

By default bench keeps every token split on the device (int32: WikiText-2 is 9 MB), so a batch
is gathered where it is used and nothing crosses the bus. For a corpus too large for the device,
``pin_memory = true`` keeps the training tokens in host memory: each batch is gathered on the host,
placed in page-locked (pinned) memory and copied with ``non_blocking=True``, and the copy of batch
k + 1 is started when batch k is handed out, so it overlaps step k's computation.

Resuming stays exact: :meth:`PrefetchingSampler.state_dict` is the sampler's state before the
prefetched batch was drawn, i.e. as if that batch had never been drawn.
"""

from __future__ import annotations

from typing import Any

import torch

from bench.data.samplers import RandomBatchSampler

Batch = tuple[torch.Tensor, torch.Tensor]


class PrefetchingSampler:
    """A :class:`RandomBatchSampler` over host tokens whose next batch is already on its way to ``device``.

    ``pin`` uses pinned host memory (needs CUDA); without it the copy is an ordinary one.
    """

    def __init__(self, sampler: RandomBatchSampler, device: torch.device, *, pin: bool):
        self.sampler, self.device, self.pin = sampler, device, pin
        self._ahead: tuple[Batch, Batch] | None = None  # (host batch kept alive during the copy, device batch)
        self._state_before_ahead: dict[str, Any] | None = None

    @property
    def batch_size(self) -> int:
        return self.sampler.batch_size

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        self.sampler.batch_size = value
        self._rewind()  # a prefetched batch of the old size must not be used

    def next_batch(self) -> Batch:
        if self._ahead is None:
            self._prefetch()
        assert self._ahead is not None  # _prefetch always leaves a batch ahead
        _, batch = self._ahead
        self._prefetch()  # starts copying the next batch while the caller computes on this one
        return batch

    def state_dict(self) -> dict[str, Any]:
        if self._ahead is not None and self._state_before_ahead is not None:
            return self._state_before_ahead
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state)
        self._ahead, self._state_before_ahead = None, None

    def _prefetch(self) -> None:
        self._state_before_ahead = self.sampler.state_dict()
        x, y = self.sampler.next_batch()
        if self.pin:
            x, y = x.pin_memory(), y.pin_memory()
        self._ahead = ((x, y), (x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)))

    def _rewind(self) -> None:
        if self._ahead is not None and self._state_before_ahead is not None:
            self.load_state_dict(self._state_before_ahead)
