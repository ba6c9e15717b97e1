"""``bench data prepare``: tokenize text, JSONL or Parquet into llm.c token shards plus a manifest.

Output, one folder::

    train_000000.bin, train_000001.bin, ..., valid_000000.bin, test_000000.bin, manifest.json

Each shard is llm.c's format: a header of 256 little-endian int32 (``[0]`` magic 20240520,
``[1]`` version, 1 = uint16 tokens and 2 = uint32, ``[2]`` token count), then the tokens. Every
shard but a split's last holds exactly ``shard_tokens`` tokens. ``manifest.json`` is::

    {"format": "bench-token-shards", "version": 1,
     "tokenizer": {"name": ..., "vocab_size": ..., "eot_id": ... or null},
     "source": {inputs with sizes, options},
     "splits": {"train": [{"file": "train_000000.bin", "tokens": N, "sha256": hex}, ...], ...}}

with only the splits that were made. The ``token-files`` dataset reads it (``manifest = "<folder>"``).

Determinism and resuming. Documents are tokenized in input order (:mod:`bench.data.encode`), an
end-of-text token before each, and the token stream is cut into shards at fixed counts, so the
bytes never depend on the worker count or timing. After each finished shard
``.prepare-state.json`` records its size, SHA-256 and where the stream continues (task index and
offset in that task's tokens). A prepare killed at any point and run again with the same command
verifies the recorded shards (a damaged one is dropped with those after it), re-reads the input
past the work already done without tokenizing it, and goes on: the result is byte-identical to an
uninterrupted run. The state file is replaced by ``manifest.json`` when every split is done.

Held-out splits: give ``valid``/``test`` their own inputs, or hold out the first
``valid_docs``/``test_docs`` documents of the train inputs (valid first, then test; train gets the
rest), as llm.c makes its first FineWeb shard the validation split.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Callable

import numpy as np

from bench.data import encode
from bench.data.sources import Source
from bench.errors import BenchError, ConfigError
from bench.fileio import atomic_open, atomic_write_json, is_temp_name, sha256_file

FORMAT = "bench-token-shards"
FORMAT_VERSION = 1
MAGIC = 20240520
HEADER_INTS = 256
HEADER_BYTES = 4 * HEADER_INTS
MANIFEST = "manifest.json"
STATE = ".prepare-state.json"
SHARD_NAME = re.compile(r"^(train|valid|test)_\d{6}\.bin$")
DEFAULT_SHARD_TOKENS = 100_000_000  # llm.c's FineWeb shards


def shard_name(split: str, index: int) -> str:
    return f"{split}_{index:06d}.bin"


def shard_header(tokens: int, dtype: np.dtype) -> bytes:
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[:3] = (MAGIC, 1 if dtype.itemsize == 2 else 2, tokens)
    return header.tobytes()


@dataclass
class Plan:
    """What to prepare: a source per split, or held-out document counts of the train source."""

    out: Path
    sources: dict[str, Source]
    holdout: dict[str, int] = field(default_factory=dict)  # split -> documents held out of train
    shard_tokens: int = DEFAULT_SHARD_TOKENS
    workers: int = 1

    def reads(self) -> list[tuple[str, Source, int, int | None]]:
        """``(split, source, first document, stop)`` in the order they are prepared."""
        out: list[tuple[str, Source, int, int | None]] = []
        start = 0
        for split in ("valid", "test"):
            if split in self.sources:
                out.append((split, self.sources[split], 0, None))
            elif self.holdout.get(split):
                out.append((split, self.sources["train"], start, start + self.holdout[split]))
                start += self.holdout[split]
        return out + [("train", self.sources["train"], start, None)]


def fingerprint(plan: Plan, tokenizer: Any, eot: int | None) -> dict[str, Any]:
    """Everything that decides the output bytes: a resume continues only under the same fingerprint."""
    return {
        "inputs": {split: source.describe() for split, source in plan.sources.items()},
        "field": plan.sources["train"].field,
        "holdout_docs": dict(plan.holdout),
        "shard_tokens": plan.shard_tokens,
        "tokenizer": tokenizer_entry(tokenizer, eot),
        "pieces": {"chunk_chars": encode.CHUNK_CHARS, "task_chars": encode.TASK_CHARS,
                   "cut": encode.can_cut(tokenizer)},
    }


def tokenizer_entry(tokenizer: Any, eot: int | None) -> dict[str, Any]:
    return {"name": str(tokenizer.name), "vocab_size": int(tokenizer.vocab_size), "eot_id": eot}


def prepare(plan: Plan, tokenizer: Any, *, progress: bool = True, say: Callable[[str], None] | None = None) -> dict:
    """Prepare (or resume, or confirm) the shards of ``plan``; returns the manifest."""
    say = say or (lambda line: print(line, file=sys.stderr, flush=True))
    eot = tokenizer.eot_token
    source = fingerprint(plan, tokenizer, eot)
    done = _existing_manifest(plan.out, source)
    if done is not None:
        say(f"bench: {plan.out} already holds these shards ({_summary(done)}); nothing to do")
        return done
    created = not plan.out.exists()
    state = _load_state(plan.out, source, say)
    fresh = not any(entry["shards"] for entry in state["splits"].values())
    started, encoded = time.perf_counter(), 0
    try:
        # The workers are forked before the progress bar starts its thread.
        with encode.worker_pool(tokenizer, plan.workers) as pool:
            for split, split_source, start, stop in plan.reads():
                encoded += _prepare_split(plan, state, split, split_source, start, stop, tokenizer, eot, pool,
                                          progress)
    except (BenchError, ValueError) as exc:
        # Nothing half-written: what this run started from nothing goes away with the error.
        if created:
            shutil.rmtree(plan.out, ignore_errors=True)
        elif fresh:
            for path in plan.out.iterdir():
                if path.name == STATE or SHARD_NAME.match(path.name):
                    path.unlink(missing_ok=True)
        if isinstance(exc, BenchError):
            raise
        raise ConfigError(str(exc)) from None
    manifest = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "tokenizer": tokenizer_entry(tokenizer, eot),
        "source": source,
        "splits": {split: [{key: shard[key] for key in ("file", "tokens", "sha256")} for shard in entry["shards"]]
                   for split, entry in sorted(state["splits"].items(), key=lambda kv: ("train", "valid", "test")
                                              .index(kv[0]))},
    }
    atomic_write_json(plan.out / MANIFEST, manifest)
    (plan.out / STATE).unlink(missing_ok=True)
    seconds = time.perf_counter() - started
    say(f"bench: wrote {_summary(manifest)} to {plan.out}; tokenized {encoded:,} tokens in {seconds:.1f} s "
        f"({encoded / max(seconds, 1e-9):,.0f} tokens/s)")
    return manifest


def _summary(manifest: dict) -> str:
    return ", ".join(f"{split} {sum(s['tokens'] for s in shards):,} tokens in {len(shards)} shard(s)"
                     for split, shards in manifest["splits"].items())


# -- the output folder: a finished manifest, a resumable state, or nothing of anyone else's ------

def _existing_manifest(out: Path, source: dict) -> dict | None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {str(out)!r} is a file; give a folder (new, or one bench data prepare made)")
    path = out / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except ValueError:
        manifest = None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ConfigError(f"--out {str(out)!r} holds a manifest.json that bench did not write; "
                          f"choose another folder")
    if manifest.get("source") != source:
        raise ConfigError(f"--out {str(out)!r} holds shards prepared from other inputs or options "
                          f"({_first_difference(manifest.get('source'), source)}); choose another folder or delete it")
    return manifest


def _load_state(out: Path, source: dict, say: Callable[[str], None]) -> dict:
    """The progress of an interrupted prepare into ``out`` (verified), or a fresh one."""
    fresh = {"format": FORMAT + "-progress", "source": source, "splits": {}}
    if not out.exists():
        out.mkdir(parents=True)
        return fresh
    names = [p.name for p in out.iterdir()]
    foreign = [n for n in names if n != STATE and not SHARD_NAME.match(n) and not is_temp_name(n)]
    if foreign:
        raise ConfigError(f"--out {str(out)!r} holds files bench data prepare did not write ({', '.join(foreign[:3])}"
                          f"{', ...' if len(foreign) > 3 else ''}); choose a new or empty folder")
    state = fresh
    if STATE in names:
        try:
            state = json.loads((out / STATE).read_text())
        except ValueError:
            say(f"bench: warning: {out / STATE} is unreadable; starting over")
            state = fresh
        if state.get("source") != source:
            raise ConfigError(f"--out {str(out)!r} holds an unfinished prepare of other inputs or options "
                              f"({_first_difference(state.get('source'), source)}); rerun that command to "
                              f"finish it, or choose another folder")
    kept = _verify_shards(out, state, say)
    for name in names:  # shards no record vouches for, and temp files of killed writes
        if name != STATE and name not in kept:
            (out / name).unlink(missing_ok=True)
    return state


def _verify_shards(out: Path, state: dict, say: Callable[[str], None]) -> set[str]:
    kept: set[str] = set()
    for split, entry in state["splits"].items():
        for position, shard in enumerate(entry["shards"]):
            path = out / shard["file"]
            size = path.stat().st_size if path.is_file() else None
            if size != shard["bytes"] or sha256_file(path) != shard["sha256"]:
                say(f"bench: warning: {path} is missing or damaged; redoing {split} from shard {position}")
                entry["shards"], entry["done"] = entry["shards"][:position], False
                break
            kept.add(shard["file"])
        if kept and entry["shards"]:
            say(f"bench: resuming {split}: {len(entry['shards'])} finished shard(s) verified and kept")
    return kept


def _first_difference(old: Any, new: Any, where: str = "") -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new), key=str):
            if old.get(key) != new.get(key):
                return _first_difference(old.get(key), new.get(key), f"{where}.{key}" if where else str(key))
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new)):
            if a != b:
                return _first_difference(a, b, f"{where}[{i}]")
    return f"{where or 'everything'}: {json.dumps(old)[:120]} then, {json.dumps(new)[:120]} now"


# -- one split: stream, encode, cut into shards ---------------------------------------------------

def _prepare_split(plan: Plan, state: dict, split: str, source: Source, start: int, stop: int | None,
                   tokenizer: Any, eot: int | None, pool: Any, show: bool) -> int:
    """Prepare one split; the number of tokens encoded (resumed work not counted)."""
    entry = state["splits"].setdefault(split, {"shards": [], "done": False})
    if entry["done"]:
        return 0
    resume_task, resume_offset = entry["shards"][-1]["resume"] if entry["shards"] else (0, 0)
    dtype = encode.token_dtype(tokenizer.vocab_size)

    def finished(shard: dict) -> None:
        entry["shards"].append(shard)
        atomic_write_json(plan.out / STATE, state)

    read = [0]
    documents = islice(source.documents(read), start, stop)
    pieces = encode.pieces(documents, encode.CHUNK_CHARS, cut=encode.can_cut(tokenizer))
    stream = encode.encode_documents(encode.tasks(pieces, encode.TASK_CHARS), tokenizer, eot=eot, pool=pool,
                                     skip=lambda index: index < resume_task)
    bar = _progress_bar(split, source.total_bytes if start == 0 and stop is None else None, show)
    started, encoded = time.perf_counter(), 0
    with ShardWriter(plan.out, split, len(entry["shards"]), plan.shard_tokens, dtype, finished) as writer:
        for index, ids in stream:
            offset = resume_offset if index == resume_task else 0
            writer.add(ids[offset:], index, offset)
            encoded += len(ids) - offset
            bar.update(read[0] - bar.n)
            bar.set_postfix_str(f"{encoded:,} tokens, {encoded / max(time.perf_counter() - started, 1e-9):,.0f} "
                                f"tokens/s", refresh=False)
    bar.close()
    entry["done"] = True
    atomic_write_json(plan.out / STATE, state)
    return encoded


def _progress_bar(split: str, total: int | None, show: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total or None, desc=f"bench: {split}", unit="B", unit_scale=True, file=sys.stderr,
                disable=not show, mininterval=0.5 if sys.stderr.isatty() else 10.0, dynamic_ncols=True)


class ShardWriter:
    """Writes a token stream as shards of exactly ``shard_tokens`` tokens (the last may hold fewer).

    Each shard is written to a temp file and renamed when complete (:func:`bench.fileio.atomic_open`),
    then ``finished`` receives its record, ``resume`` saying where the stream continues: the task
    index and the offset into that task's tokens of the next token."""

    def __init__(self, out: Path, split: str, first_index: int, shard_tokens: int, dtype: np.dtype,
                 finished: Callable[[dict], None]) -> None:
        self.out, self.split, self.index = out, split, first_index
        self.shard_tokens, self.dtype, self.finished = shard_tokens, dtype.newbyteorder("<"), finished
        self.count = 0
        self.stack: ExitStack | None = None
        self.pending: Any = None
        self.position = (0, 0)

    def __enter__(self) -> ShardWriter:
        return self

    def add(self, ids: np.ndarray, task: int, offset: int) -> None:
        ids = ids.astype(self.dtype, copy=False)
        while len(ids):
            if self.pending is None:
                self._open()
            take = min(len(ids), self.shard_tokens - self.count)
            self.pending.handle.write(ids[:take].tobytes())
            self.count += take
            ids, offset = ids[take:], offset + take
            self.position = (task, offset)
            if self.count == self.shard_tokens:
                self._close()

    def _open(self) -> None:
        self.stack = ExitStack()
        self.pending = self.stack.enter_context(atomic_open(self.out / shard_name(self.split, self.index)))
        self.pending.handle.write(shard_header(0, self.dtype))  # the count is filled in on close
        self.count = 0

    def _close(self) -> None:
        assert self.stack is not None and self.pending is not None
        handle = self.pending.handle
        handle.seek(0)
        handle.write(shard_header(self.count, self.dtype))
        handle.seek(0, os.SEEK_END)
        path = self.pending.target
        self.stack.close()  # fsync and rename
        self.finished({"file": path.name, "tokens": self.count, "bytes": path.stat().st_size,
                       "sha256": sha256_file(path), "resume": list(self.position)})
        self.stack = self.pending = None
        self.index += 1

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        if self.stack is None:
            return
        if kind is None:
            self._close()  # the split's last, shorter shard
        else:
            self.stack.__exit__(kind, exc, tb)  # removes the temp file
