"""What a dataset plugin returns: text or token ids for train/valid/test."""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from bench.data.shards import TokenShards

SPLITS = ("train", "valid", "test")
READ_BYTES = 1 << 20  # bytes read at a time from a text file


@dataclass(frozen=True)
class TextFile:
    """A text split that stays on disk: a UTF-8 file, or the bytes ``[start, end)`` of one, cut to its
    first ``max_chars`` characters when that is not 0.

    The text is decoded exactly (no newline translation) and streamed block by block, so a corpus
    is never one ``str`` in memory; the token cache keys it cheaply by the file's size, mtime and a
    few sampled blocks (:mod:`bench.data.token_cache`) instead of hashing all of it on every run."""

    path: Path
    start: int = 0
    end: int | None = None
    max_chars: int = 0

    def blocks(self, read_bytes: int = READ_BYTES) -> Iterator[str]:
        """The text in order, in pieces of at most ``read_bytes`` bytes' worth of characters."""
        decoder = codecs.getincrementaldecoder("utf-8")()
        chars_left = self.max_chars or -1
        with open(self.path, "rb") as handle:
            handle.seek(self.start)
            bytes_left = -1 if self.end is None else self.end - self.start
            while chars_left != 0:
                size = read_bytes if bytes_left < 0 else min(read_bytes, bytes_left)
                data = handle.read(size) if size else b""
                bytes_left -= len(data) if bytes_left >= 0 else 0
                text = decoder.decode(data, final=not data)
                if chars_left > 0:
                    text = text[:chars_left]
                    chars_left -= len(text)
                if text:
                    yield text
                if not data:
                    break

    def read(self) -> str:
        """The whole text as one string (for small files and tests; training streams :meth:`blocks`)."""
        return "".join(self.blocks())

    def is_empty(self) -> bool:
        return next(iter(self.blocks(64)), "") == ""


def is_text_split(split: object) -> bool:
    return isinstance(split, (str, TextFile))


@dataclass
class Corpus:
    """Three splits of either text (``str``, or a :class:`TextFile` on disk) or token ids (1-D
    integer ``np.ndarray``, or :class:`bench.data.shards.TokenShards`: several such arrays, e.g.
    memory-mapped shard files). Token arrays are read where they lie (a memmap is never copied
    whole; see :mod:`bench.data.loading`).

    Token corpora set ``vocab_size``. ``entropy_rate`` (nats per token), when the source is
    known analytically, is the loss no model can beat on average; reports show ``exp`` of it
    as the perplexity floor.
    """

    name: str
    splits: dict[str, str | TextFile | np.ndarray | TokenShards]
    vocab_size: int | None = None
    entropy_rate: float | None = None
    notes: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = [s for s in SPLITS if s not in self.splits]
        if missing:
            raise ValueError(f"corpus {self.name!r} lacks split(s) {missing}")
        kinds = {is_text_split(v) for v in self.splits.values()}
        if len(kinds) != 1:
            raise ValueError(f"corpus {self.name!r} mixes text and token-id splits")
        if not self.is_text and self.vocab_size is None:
            raise ValueError(f"token corpus {self.name!r} must set vocab_size")

    @property
    def is_text(self) -> bool:
        return is_text_split(self.splits["train"])
