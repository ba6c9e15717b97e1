"""The one tokenization path: documents in, token arrays out, in input order, on N processes.

Both ``bench data prepare`` (:mod:`bench.data.prepare`) and the token cache of the built-in text
datasets (:mod:`bench.data.token_cache`) tokenize through :func:`encode_documents`:

1. Each document is a stream of text blocks (a file read piece by piece, or one JSONL string).
   :func:`pieces` cuts it into pieces of about ``CHUNK_CHARS`` characters, only at *safe cuts*:
   the start of a line that begins with a non-space character (and whose previous line does not
   end in whitespace), or with one space then a non-space character. Those positions are pretoken
   boundaries of regex-pretokenized BPEs such as GPT-2's and cl100k's, so encoding the pieces one
   by one gives exactly the ids of encoding the whole document. A tokenizer without
   ``encode_batch`` makes no such promise; it gets every document whole.
2. :func:`tasks` groups consecutive pieces into tasks of about ``TASK_CHARS`` characters. The
   grouping depends on the input alone, never on the worker count or timing, so the token stream,
   and every shard cut from it at fixed token counts, is the same byte for byte however it ran.
3. :func:`encode_task` encodes a task's pieces with one ``encode_batch`` call (tiktoken runs a
   batch on its own threads), puts the end-of-text id before the first piece of every document
   when asked (llm.c's convention: every document, the first included, starts after an EOT), and
   returns the ids as one array of the narrowest dtype.
4. :func:`encode_documents` runs the tasks in-process or on a :func:`worker_pool` of processes,
   with at most two tasks per worker in flight, so reading never runs ahead of tokenizing and memory
   stays bounded whatever the input size. Results come back in task order.

Worker processes are forked, so they inherit the tokenizer object (a plugin's tokenizer need not
be picklable); where fork is unavailable the work runs in-process.
"""

from __future__ import annotations

import multiprocessing
import re
import signal
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import numpy as np

CHUNK_CHARS = 1 << 18  # ~256 K characters per piece: enough pieces per batch to keep tiktoken's threads busy
TASK_CHARS = 1 << 21  # ~2 M characters per task: ~0.3 s of GPT-2 BPE on one core, little queueing overhead

# A zero-width match at the start of a line that is safe to cut before (see the module docstring).
SAFE_CUT = re.compile(r"(?<=\S\n)(?=\S)|(?<=\n)(?= \S)")


@dataclass(frozen=True)
class Piece:
    """A run of one document's text; ``starts_document`` marks its first piece."""

    text: str
    starts_document: bool


def token_dtype(vocab_size: int) -> np.dtype:
    """The narrowest unsigned dtype holding ids ``0 .. vocab_size-1`` (uint16 up to 65536)."""
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


def can_cut(tokenizer: Any) -> bool:
    """Whether documents may be cut into pieces for this tokenizer (it has ``encode_batch``)."""
    return callable(getattr(tokenizer, "encode_batch", None))


def split_for_batch(text: str, chunk_chars: int = CHUNK_CHARS) -> list[str]:
    """Cut ``text`` into pieces of about ``chunk_chars`` characters at safe line starts."""
    return [piece.text for piece in pieces([[text]], chunk_chars) if piece.text]


def pieces(documents: Iterable[Iterable[str]], chunk_chars: int = CHUNK_CHARS, cut: bool = True) -> Iterator[Piece]:
    """The pieces of every document, in order; each document is an iterable of text blocks.

    A piece ends at the first safe cut at or after ``chunk_chars`` characters; text after the last
    safe cut of what has been read so far waits for the next block, so a file read block by block
    is cut exactly where the whole text would be. Empty documents yield one empty piece (which
    still carries its end-of-text token)."""
    for document in documents:
        first, buffer = True, ""
        for block in document:
            buffer += block
            while cut and len(buffer) > chunk_chars:
                match = SAFE_CUT.search(buffer, chunk_chars)
                if match is None:
                    break
                yield Piece(buffer[:match.start()], first)
                first, buffer = False, buffer[match.start():]
        if buffer or first:
            yield Piece(buffer, first)


def tasks(stream: Iterable[Piece], task_chars: int = TASK_CHARS) -> Iterator[list[Piece]]:
    """Consecutive pieces grouped into lists of about ``task_chars`` characters."""
    task: list[Piece] = []
    size = 0
    for piece in stream:
        task.append(piece)
        size += len(piece.text)
        if size >= task_chars:
            yield task
            task, size = [], 0
    if task:
        yield task


def encode_task(tokenizer: Any, task: list[Piece], eot: int | None) -> np.ndarray:
    """The ids of a task's pieces, concatenated, ``eot`` first in every document when not None.

    Raises ``ValueError`` when the tokenizer yields an id outside ``[0, vocab_size)``."""
    texts = [piece.text for piece in task]
    encoded = tokenizer.encode_batch(texts) if can_cut(tokenizer) else \
        [tokenizer.encode(text) for text in texts]
    eot_array = np.array([eot if eot is not None else 0], dtype=np.int64)
    parts: list[np.ndarray] = []
    for piece, ids in zip(task, encoded):
        if eot is not None and piece.starts_document:
            parts.append(eot_array)
        parts.append(np.array(ids, dtype=np.int64))
    flat = np.concatenate(parts) if parts else np.empty(0, np.int64)
    vocab_size = int(tokenizer.vocab_size)
    if flat.size and (int(flat.min()) < 0 or int(flat.max()) >= vocab_size):
        bad = int(flat.min()) if int(flat.min()) < 0 else int(flat.max())
        raise ValueError(f"tokenizer {tokenizer.name!r} produced id {bad} outside its vocabulary of {vocab_size}")
    return flat.astype(token_dtype(vocab_size))


# -- running tasks, in-process or on forked workers ----------------------------------------------

_worker_tokenizer: Any = None  # set in each forked worker by _init_worker


def _init_worker(tokenizer: Any) -> None:
    global _worker_tokenizer
    _worker_tokenizer = tokenizer
    # Ctrl-C reaches the whole process group: the parent stops the pool (and keeps its finished
    # shards); a worker printing its own KeyboardInterrupt traceback would only be noise.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _encode_in_worker(task: list[Piece], eot: int | None) -> np.ndarray:
    return encode_task(_worker_tokenizer, task, eot)


@contextmanager
def worker_pool(tokenizer: Any, workers: int) -> Iterator[Any]:
    """A pool of ``workers`` forked processes that hold ``tokenizer``, or None to work in-process
    (one worker, or no fork on this platform). Create it before starting threads of your own."""
    if workers <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        yield None
        return
    with multiprocessing.get_context("fork").Pool(workers, initializer=_init_worker, initargs=(tokenizer,)) as pool:
        yield pool


def encode_documents(task_stream: Iterable[list[Piece]], tokenizer: Any, *, eot: int | None, pool: Any = None,
                     skip: Callable[[int], bool] = lambda index: False) -> Iterator[tuple[int, np.ndarray]]:
    """``(task index, ids)`` for every task, in order, encoded on ``pool`` (from :func:`worker_pool`)
    or in-process; ``skip(index)`` tasks are read but not encoded (a resumed prepare passes over
    work it already has)."""
    numbered = ((index, task) for index, task in enumerate(task_stream) if not skip(index))
    if pool is None:
        for index, task in numbered:
            yield index, encode_task(tokenizer, task, eot)
        return
    limit = 2 * pool._processes  # bounded: reading waits for tokenizing, so memory does not grow with the input
    in_flight: deque = deque()
    for index, task in numbered:
        in_flight.append((index, pool.apply_async(_encode_in_worker, (task, eot))))
        if len(in_flight) >= limit:
            done, result = in_flight.popleft()
            yield done, result.get()
    while in_flight:
        done, result = in_flight.popleft()
        yield done, result.get()
