"""What a dataset plugin returns: text or token ids for train/valid/test."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bench.data.shards import TokenShards

SPLITS = ("train", "valid", "test")


@dataclass
class Corpus:
    """Three splits of either text (``str``) or token ids (1-D integer ``np.ndarray``, or
    :class:`bench.data.shards.TokenShards`: several such arrays, e.g. memory-mapped shard files).
    Token arrays are read where they lie (a memmap is never copied whole; see
    :mod:`bench.data.loading`).

    Token corpora set ``vocab_size``. ``entropy_rate`` (nats per token), when the source is
    known analytically, is the loss no model can beat on average; reports show ``exp`` of it
    as the perplexity floor.
    """

    name: str
    splits: dict[str, str | np.ndarray | TokenShards]
    vocab_size: int | None = None
    entropy_rate: float | None = None
    notes: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = [s for s in SPLITS if s not in self.splits]
        if missing:
            raise ValueError(f"corpus {self.name!r} lacks split(s) {missing}")
        kinds = {isinstance(v, str) for v in self.splits.values()}
        if len(kinds) != 1:
            raise ValueError(f"corpus {self.name!r} mixes text and token-id splits")
        if not self.is_text and self.vocab_size is None:
            raise ValueError(f"token corpus {self.name!r} must set vocab_size")

    @property
    def is_text(self) -> bool:
        return isinstance(self.splits["train"], str)
