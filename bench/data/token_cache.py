"""Tokenize a text once, keep the ids on disk, and memory-map them on every later run.

Tokenizing WikiText-2 with GPT-2's BPE takes seconds, and every cell of a matrix needs the
same ids, so they are cached as a raw little-endian array (no header: the file name carries
everything needed to read it back) under::

    cache_dir()/tokens/<sha256(text)[:16]>-<tokenizer.name>.<dtype>.bin

The key is the *text* plus the tokenizer's *name*: a tokenizer whose vocabulary changes must
change its name too, or stale ids would be reused. Files are written to a temporary name and
renamed, so concurrent cells or an interrupted run never expose a half-written cache.

Large texts are cut into chunks and handed to ``tokenizer.encode_batch`` when the tokenizer has
one (tiktoken encodes a batch on several threads). Chunks are cut only at the start of a line
that begins with a non-space character, or with a single space and then a non-space character,
and only where the newline ending the previous line is not preceded by other whitespace. Those
positions are pretoken boundaries for regex-pretokenized BPEs such as GPT-2's and cl100k's, so
the concatenated ids equal ``encode(text)`` exactly; a tokenizer without ``encode_batch`` gets
the whole text in one ``encode`` call.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np

from bench.data.datadir import atomic_write_bytes, cache_dir

CHUNK_CHARS = 1 << 18  # ~256 KiB per batch item: enough items to keep tiktoken's threads busy

# A zero-width match at the start of a line that is safe to cut before (see module docstring).
_SAFE_CUT = re.compile(r"(?<=\S\n)(?=\S)|(?<=\n)(?= \S)")
_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]")


def token_dtype(vocab_size: int) -> np.dtype:
    """The narrowest unsigned dtype holding ids ``0 .. vocab_size-1`` (uint16 up to 65536)."""
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


def cache_path(text: str, tokenizer) -> Path:
    """Where the ids of ``text`` under ``tokenizer`` are (or will be) cached."""
    key = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    name = _UNSAFE_NAME_CHARS.sub("_", str(tokenizer.name))
    dtype = token_dtype(tokenizer.vocab_size)
    return cache_dir() / "tokens" / f"{key}-{name}.{dtype.name}.bin"


def load_tokens(text: str, tokenizer) -> np.ndarray:
    """Token ids of ``text`` as a read-only 1-D array, tokenizing only if not cached yet.

    Returns a read-only ``np.memmap`` of dtype :func:`token_dtype` (an empty in-memory array
    for empty text, which cannot be memory-mapped). Raises ``ValueError`` if the tokenizer
    yields an id outside ``[0, vocab_size)``.
    """
    dtype = token_dtype(tokenizer.vocab_size)
    if not text:
        return np.empty(0, dtype=dtype)
    path = cache_path(text, tokenizer)
    if not path.is_file():
        ids = _encode(text, tokenizer)
        if ids.size == 0:
            return ids.astype(dtype)
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= tokenizer.vocab_size:
            raise ValueError(
                f"tokenizer {tokenizer.name!r} produced id {lo if lo < 0 else hi} outside "
                f"its vocabulary of {tokenizer.vocab_size}"
            )
        atomic_write_bytes(path, np.ascontiguousarray(ids, dtype=dtype.newbyteorder("<")).data)
    return np.memmap(path, dtype=dtype.newbyteorder("<"), mode="r")


def split_for_batch(text: str, chunk_chars: int = CHUNK_CHARS) -> list[str]:
    """Cut ``text`` into pieces of about ``chunk_chars`` characters at safe line starts."""
    pieces, start, n = [], 0, len(text)
    while start < n:
        target = start + chunk_chars
        match = _SAFE_CUT.search(text, target) if target < n else None
        end = match.start() if match else n
        pieces.append(text[start:end])
        start = end
    return pieces


def _encode(text: str, tokenizer) -> np.ndarray:
    encode_batch = getattr(tokenizer, "encode_batch", None)
    if callable(encode_batch) and len(text) > CHUNK_CHARS:
        parts = [np.asarray(ids, dtype=np.int64) for ids in encode_batch(split_for_batch(text, CHUNK_CHARS))]
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
    return np.asarray(tokenizer.encode(text), dtype=np.int64)
