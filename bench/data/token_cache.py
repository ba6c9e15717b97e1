"""Tokenize a text once, keep the ids on disk, and memory-map them on every later run.

Tokenizing WikiText-2 with GPT-2's BPE takes seconds to minutes, and every cell of a matrix
needs the same ids, so they are cached as a raw little-endian array under::

    cache_dir()/tokens/<sha256(text)[:16]>-<tokenizer.name>.<dtype>.n<tokens>.<sha256(file)[:16]>.bin

The key is the *text* plus the tokenizer's *name*: a tokenizer whose vocabulary changes must
change its name too, or stale ids would be reused. The name also records how many tokens the
file holds and the start of its own SHA-256, so every load checks the file: one cut short (even
to a whole number of tokens) or altered is rebuilt with a warning, never trained on. Files are
written atomically (:mod:`bench.fileio`: temp file, fsync, rename), so concurrent cells or an
interrupted run never expose a half-written cache; ``bench run`` sweeps the temp files of
writes killed before their rename (:func:`bench.fileio.sweep_temp_files` on :func:`tokens_dir`).

Large texts are cut into chunks and handed to ``tokenizer.encode_batch`` when the tokenizer has
one (tiktoken encodes a batch on several threads), a few chunks per call so that progress can
be shown. Chunks are cut only at the start of a line
that begins with a non-space character, or with a single space and then a non-space character,
and only where the newline ending the previous line is not preceded by other whitespace. Those
positions are pretoken boundaries for regex-pretokenized BPEs such as GPT-2's and cl100k's, so
the concatenated ids equal ``encode(text)`` exactly; a tokenizer without ``encode_batch`` gets
the whole text in one ``encode`` call.
"""

from __future__ import annotations

import hashlib
import re
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

from bench.data.datadir import cache_dir
from bench.fileio import atomic_write_bytes, sha256_file

CHUNK_CHARS = 1 << 18  # ~256 KiB per batch item: enough items to keep tiktoken's threads busy
CHUNKS_PER_BATCH = 8  # chunks per encode_batch call (tiktoken's default thread count); progress after each
PROGRESS_EVERY_S = 2.0  # at most one progress line this often (the first and last always show)

# A zero-width match at the start of a line that is safe to cut before (see module docstring).
_SAFE_CUT = re.compile(r"(?<=\S\n)(?=\S)|(?<=\n)(?= \S)")
_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]")
_CACHED_NAME = re.compile(r"\.n(\d+)\.([0-9a-f]{16})\.bin$")


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def token_dtype(vocab_size: int) -> np.dtype:
    """The narrowest unsigned dtype holding ids ``0 .. vocab_size-1`` (uint16 up to 65536)."""
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


def tokens_dir() -> Path:
    return cache_dir() / "tokens"


def cache_stem(text: str, tokenizer) -> str:
    """The part of a cache file's name fixed by ``text`` and ``tokenizer`` (before count and checksum)."""
    key = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    name = _UNSAFE_NAME_CHARS.sub("_", str(tokenizer.name))
    return f"{key}-{name}.{token_dtype(tokenizer.vocab_size).name}"


def load_tokens(text: str, tokenizer, *, label: str | None = None,
                say: Callable[[str], None] = _stderr) -> np.ndarray:
    """Token ids of ``text`` as a read-only 1-D array, tokenizing only if not cached yet.

    Returns a read-only ``np.memmap`` of dtype :func:`token_dtype` (an empty in-memory array
    for empty text, which cannot be memory-mapped). Raises ``ValueError`` if the tokenizer
    yields an id outside ``[0, vocab_size)``. ``label`` (``"wikitext2 train"``) names the text
    in the lines that say tokenizing has started and how far it is.
    """
    dtype = token_dtype(tokenizer.vocab_size)
    if not text:
        return np.empty(0, dtype=dtype)
    stem = cache_stem(text, tokenizer)
    path = _verified_cache_file(stem, dtype, say)
    if path is None:
        ids = _tokenize(text, tokenizer, label or "a text", say)
        if ids.size == 0:
            return ids.astype(dtype)
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= tokenizer.vocab_size:
            raise ValueError(
                f"tokenizer {tokenizer.name!r} produced id {lo if lo < 0 else hi} outside "
                f"its vocabulary of {tokenizer.vocab_size}"
            )
        data = np.ascontiguousarray(ids, dtype=dtype.newbyteorder("<")).tobytes()
        path = tokens_dir() / f"{stem}.n{ids.size}.{hashlib.sha256(data).hexdigest()[:16]}.bin"
        atomic_write_bytes(path, data)
    return np.memmap(path, dtype=dtype.newbyteorder("<"), mode="r")


def _verified_cache_file(stem: str, dtype: np.dtype, say: Callable[[str], None]) -> Path | None:
    """A cache file for ``stem`` whose size and checksum match its name; damaged ones are deleted."""
    for path in sorted(tokens_dir().glob(f"{stem}.n*.bin")):
        match = _CACHED_NAME.search(path.name)
        if match is None or path.name != f"{stem}{match.group(0)}":
            continue
        count, checksum = int(match.group(1)), match.group(2)
        try:
            size = path.stat().st_size
            problem = (f"{size} bytes where its name records {count} tokens of {dtype.itemsize} bytes"
                       if size != dtype.itemsize * count else
                       None if sha256_file(path).startswith(checksum) else
                       "its SHA-256 does not start with the 16 hex digits its name records")
        except FileNotFoundError:
            continue  # replaced by a concurrent rebuild
        if problem is None:
            return path
        say(f"warning: token cache {path} is damaged ({problem}); rebuilding it")
        path.unlink(missing_ok=True)
    return None
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


def _tokenize(text: str, tokenizer, label: str, say: Callable[[str], None]) -> np.ndarray:
    say(f"bench: tokenizing {label} with {tokenizer.name} (once; cached in {tokens_dir()})")
    started = time.perf_counter()
    ids = _encode(text, tokenizer, label, say)
    say(f"bench: tokenized {label}: {ids.size:,} tokens in {time.perf_counter() - started:.1f} s")
    return ids


def _encode(text: str, tokenizer, label: str, say: Callable[[str], None]) -> np.ndarray:
    encode_batch = getattr(tokenizer, "encode_batch", None)
    if not callable(encode_batch) or len(text) <= CHUNK_CHARS:
        return np.asarray(tokenizer.encode(text), dtype=np.int64)
    pieces = split_for_batch(text, CHUNK_CHARS)
    parts: list[np.ndarray] = []
    started = last_said = time.perf_counter()
    for start in range(0, len(pieces), CHUNKS_PER_BATCH):
        parts += [np.asarray(ids, dtype=np.int64) for ids in encode_batch(pieces[start:start + CHUNKS_PER_BATCH])]
        done, now = min(start + CHUNKS_PER_BATCH, len(pieces)), time.perf_counter()
        if start == 0 or done == len(pieces) or now - last_said >= PROGRESS_EVERY_S:
            say(f"bench:   {done}/{len(pieces)} chunks of {label} ({now - started:.1f} s)")
            last_said = now
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
