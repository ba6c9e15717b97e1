"""Tokenize a text once, keep the ids on disk, and memory-map them on every later run.

Tokenizing WikiText-2 with GPT-2's BPE takes seconds to minutes, and every cell of a matrix
needs the same ids, so they are cached as a raw little-endian array under::

    cache_dir()/tokens/<key>-<tokenizer.name>.<dtype>.n<tokens>.<sha256(file)[:16]>.bin

``<key>`` names the text, cheaply for a :class:`bench.data.corpus.TextFile` (the built-in text
datasets): the first 16 hex digits of a SHA-256 over the file's resolved path, size, mtime in
nanoseconds, the byte range and ``max_chars`` of the split, and ``SAMPLE_BLOCKS`` blocks of
``SAMPLE_BYTES`` bytes read at evenly spaced offsets (the first and the last block included). A
warm start thus reads ~64 KiB of the text, not all of it. Any write to the file changes its mtime
(and usually its size), so an edited file is tokenized again; the sampled blocks also catch a
different file copied in with its old mtime kept (``cp -p``, ``rsync -a``) when they differ. What
goes unnoticed: a change between the sampled blocks, same size, with the mtime set back by hand. A
``str`` text (a plugin's dataset) is keyed by the SHA-256 of all of it, as it is in memory anyway.

The key includes the tokenizer's *name*: a tokenizer whose vocabulary changes must change its name
too, or stale ids would be reused. The file name also records how many tokens the file holds and
the start of its own SHA-256, so every load checks the file: one cut short (even to a whole number
of tokens) or altered is rebuilt with a warning, never trained on. Files are written atomically
(:mod:`bench.fileio`: temp file, fsync, rename), so concurrent cells or an interrupted run never
expose a half-written cache; ``bench run`` sweeps the temp files of writes killed before their
rename (:func:`bench.fileio.sweep_temp_files` on :func:`tokens_dir`).

Tokenizing goes through :mod:`bench.data.encode`, the path ``bench data prepare`` uses: the text
is streamed in blocks, cut at pretoken boundaries into pieces handed to ``tokenizer.encode_batch``
(tiktoken encodes a batch on several threads), and the ids are written to the cache file as they
come, in the narrowest dtype, so tokenizing never holds the text as one string or the ids as
int64. The ids equal ``encode(text)`` exactly (a tokenizer without ``encode_batch`` gets the whole
text in one ``encode`` call). Word counts of word-level corpora are cached beside the ids, under
the same key.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import time
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from bench.data import encode
from bench.data.corpus import TextFile
from bench.data.datadir import cache_dir
from bench.data.encode import split_for_batch, token_dtype
from bench.fileio import HashingWriter, atomic_open, atomic_write_bytes, sha256_file

CHUNK_CHARS = encode.CHUNK_CHARS  # characters per piece handed to encode_batch
CHUNKS_PER_BATCH = 8  # pieces per encode_batch call (tiktoken's default thread count)
PROGRESS_EVERY_S = 2.0  # at most one progress line this often (the first and last always show)
SAMPLE_BLOCKS = 16  # blocks of a text file read for its cache key
SAMPLE_BYTES = 4096
_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]")
_CACHED_NAME = re.compile(r"\.n(\d+)\.([0-9a-f]{16})\.bin$")


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def tokens_dir() -> Path:
    return cache_dir() / "tokens"


def cache_stem(text: str | TextFile, tokenizer) -> str:
    """The part of a cache file's name fixed by ``text`` and ``tokenizer`` (before count and checksum)."""
    name = _UNSAFE_NAME_CHARS.sub("_", str(tokenizer.name))
    return f"{text_key(text)}-{name}.{token_dtype(tokenizer.vocab_size).name}"


def text_key(text: str | TextFile) -> str:
    """16 hex digits naming a text: cheap for a file, the SHA-256 of a string (module docstring)."""
    if isinstance(text, str):
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    path = Path(text.path)
    stat = path.stat()
    digest = hashlib.sha256(json.dumps([str(path.resolve()), stat.st_size, stat.st_mtime_ns, text.start, text.end,
                                        text.max_chars]).encode())
    last = max(stat.st_size - SAMPLE_BYTES, 0)
    with open(path, "rb") as handle:
        for i in range(SAMPLE_BLOCKS):
            handle.seek(last * i // (SAMPLE_BLOCKS - 1))
            digest.update(handle.read(SAMPLE_BYTES))
    return digest.hexdigest()[:16]


def load_tokens(text: str | TextFile, tokenizer, *, label: str | None = None,
                say: Callable[[str], None] = _stderr) -> np.ndarray:
    """Token ids of ``text`` as a read-only 1-D array, tokenizing only if not cached yet.

    Returns a read-only ``np.memmap`` of dtype :func:`token_dtype` (an empty in-memory array
    for empty text, which cannot be memory-mapped). Raises ``ValueError`` if the tokenizer
    yields an id outside ``[0, vocab_size)``. ``label`` (``"wikitext2 train"``) names the text
    in the lines that say tokenizing has started and how far it is.
    """
    dtype = token_dtype(tokenizer.vocab_size).newbyteorder("<")
    if text == "" or (isinstance(text, TextFile) and text.is_empty()):
        return np.empty(0, dtype=dtype)
    stem = cache_stem(text, tokenizer)
    path = _verified_cache_file(stem, dtype, say) or _tokenize(text, stem, tokenizer, label or "a text", say)
    if path.stat().st_size == 0:  # text that encodes to no ids at all
        return np.empty(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r")


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
def _tokenize(text: str | TextFile, stem: str, tokenizer, label: str, say: Callable[[str], None]) -> Path:
    """Encode ``text`` into a new cache file (streamed, atomic); its path."""
    say(f"bench: tokenizing {label} with {tokenizer.name} (once; cached in {tokens_dir()})")
    blocks: Iterable[str] = [text] if isinstance(text, str) else text.blocks()
    pieces = encode.pieces([blocks], CHUNK_CHARS, cut=encode.can_cut(tokenizer))
    stream = encode.encode_documents(encode.tasks(pieces, CHUNKS_PER_BATCH * CHUNK_CHARS), tokenizer, eot=None)
    started = last_said = time.perf_counter()
    count = 0
    with atomic_open(tokens_dir() / f"{stem}.bin") as pending:
        writer = HashingWriter(pending.handle)
        for index, ids in stream:
            writer.write(ids.astype(ids.dtype.newbyteorder("<"), copy=False).tobytes())
            count += ids.size
            now = time.perf_counter()
            if index == 0 or now - last_said >= PROGRESS_EVERY_S:
                say(f"bench:   {count:,} tokens of {label} ({now - started:.1f} s)")
                last_said = now
        pending.target = tokens_dir() / f"{stem}.n{count}.{writer.hexdigest()[:16]}.bin"
    say(f"bench: tokenized {label}: {count:,} tokens in {time.perf_counter() - started:.1f} s")
    return pending.target


def count_words(text: str | TextFile) -> int:
    """:func:`bench.data.loading.word_count` of a text, streamed; cached beside the ids for a file."""
    if isinstance(text, str):
        return word_count_of_blocks([text])
    path = tokens_dir() / f"{text_key(text)}.words"
    try:
        return int(path.read_text())
    except (FileNotFoundError, ValueError):
        words = word_count_of_blocks(text.blocks())
        atomic_write_bytes(path, str(words).encode())
        return words


def word_count_of_blocks(blocks: Iterable[str]) -> int:
    """Whitespace-separated words plus one end-of-line per line (``str.splitlines`` lines) of the
    concatenated blocks: a line cut between two blocks is counted once."""
    words, carry = 0, ""
    for block in blocks:
        lines = (carry + block).splitlines(keepends=True)
        # The last line may continue in the next block (or be a "\r" whose "\n" comes next).
        carry = lines.pop() if lines and (lines[-1].endswith("\r") or lines[-1].splitlines()[0] == lines[-1]) else ""
        words += sum(len(line.split()) + 1 for line in lines)
    return words + (len(carry.split()) + 1 if carry else 0)


__all__ = ["load_tokens", "split_for_batch", "token_dtype", "tokens_dir", "count_words", "text_key"]
