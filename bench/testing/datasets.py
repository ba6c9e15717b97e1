"""Dataset checks: ``factory(**hparams) -> bench.data.corpus.Corpus``, tagged ``"text"`` or ``"tokens"``.

A dataset whose files are missing raises ``bench.errors.DataMissingError``; the kit then skips its
checks instead of failing them.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from bench.components import Component
from bench.data.corpus import SPLITS, Corpus, TextFile
from bench.data.shards import TokenShards
from bench.testing.kit import KindChecks, require

TAGS = ("text", "tokens")


@dataclass
class DatasetCase:
    component: Component
    hparams: dict[str, Any] = field(default_factory=dict)

    def build(self) -> Corpus:
        corpus = self.component.factory(**self.hparams)
        require(isinstance(corpus, Corpus),
                f"factory returned {type(corpus).__name__}, not a bench.data.corpus.Corpus")
        return corpus


def make_case(component: Component, overrides: Mapping[str, Any]) -> DatasetCase:
    return DatasetCase(component, {**component.defaults, **overrides})


def check_tag_matches_content(case: DatasetCase) -> None:
    tags = sorted(set(case.component.tags) & set(TAGS))
    require(len(tags) == 1,
            f"tag the component with exactly one of {list(TAGS)}, got tags {sorted(case.component.tags)}")
    corpus = case.build()
    want = "text" if corpus.is_text else "tokens"
    require(tags == [want], f"tagged {tags[0]!r} but the corpus holds {want}")


def check_splits(case: DatasetCase) -> None:
    corpus = case.build()
    for split in SPLITS:
        require(split in corpus.splits, f"split {split!r} is missing")
    for split in ("train", "valid"):
        content = corpus.splits[split]
        empty = content.is_empty() if isinstance(content, TextFile) else len(content) == 0
        require(not empty, f"the {split} split is empty; training and validation need data")


def check_token_ids(case: DatasetCase) -> None:
    corpus = case.build()
    if corpus.is_text:
        return
    vocab = corpus.vocab_size or 0
    require(vocab > 0, f"vocab_size must be positive, got {corpus.vocab_size}")
    for split in SPLITS:
        split_ids = corpus.splits[split]
        arrays: list[Any] = split_ids.arrays if isinstance(split_ids, TokenShards) else [split_ids]
        for ids in arrays:
            is_ids = isinstance(ids, np.ndarray) and ids.ndim == 1 and np.issubdtype(ids.dtype, np.integer)
            require(is_ids, f"split {split!r} must be a 1-D integer numpy array or TokenShards of them, "
                            f"got {type(ids).__name__}")
            if len(ids):
                low, high = int(ids.min()), int(ids.max())
                require(0 <= low and high < vocab,
                        f"split {split!r} has ids in [{low}, {high}], outside [0, vocab_size={vocab})")


def check_deterministic(case: DatasetCase) -> None:
    a, b = case.build(), case.build()
    for split in SPLITS:
        x, y = a.splits[split], b.splits[split]
        same = x == y if isinstance(x, (str, TextFile)) else _same_ids(x, y)
        require(same, f"two builds with the same hyperparameters gave different {split!r} splits; seed any randomness")


def fingerprint(corpus: Corpus) -> str:
    """SHA-256 of everything a corpus holds: its splits, vocabulary size and entropy rate."""
    digest = hashlib.sha256(repr((corpus.vocab_size, corpus.entropy_rate)).encode())
    for split in SPLITS:
        data = corpus.splits[split]
        if isinstance(data, TextFile):  # a text split left on disk: its text is what it holds
            data = data.read()
        if isinstance(data, str):
            digest.update(data.encode("utf-8"))
            continue
        for array in data.arrays if isinstance(data, TokenShards) else [data]:
            digest.update(np.ascontiguousarray(array).astype(np.int64, copy=False).tobytes())
    return digest.hexdigest()


_FRESH_PROCESS = """
import pickle, sys
from bench.testing.datasets import fingerprint
factory, hparams = pickle.loads(sys.stdin.buffer.read())
print(fingerprint(factory(**hparams)))
"""


def check_deterministic_across_processes(case: DatasetCase) -> None:
    """A fresh interpreter with another ``PYTHONHASHSEED`` must build the same corpus: ``--jobs``
    workers and Ray tasks build it in their own processes, and ``hash(str)`` differs between them."""
    here = fingerprint(case.build())
    try:
        payload = pickle.dumps((case.component.factory, case.hparams))
    except (pickle.PicklingError, AttributeError, TypeError) as exc:
        import pytest

        pytest.skip(f"the factory cannot be pickled to rebuild it in another process ({exc}); make it a "
                    "module-level function")
    seed = "2" if os.environ.get("PYTHONHASHSEED") == "1" else "1"
    env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    done = subprocess.run([sys.executable, "-c", _FRESH_PROCESS], input=payload, capture_output=True, env=env,
                          timeout=600)
    last = (done.stderr.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
    require(done.returncode == 0, f"building it in a fresh process (as a --jobs worker does) failed: {last}")
    require(done.stdout.decode().strip() == here,
            f"a fresh process with PYTHONHASHSEED={seed} built different splits than this one: the data depends on "
            "something that differs between processes (hash() of a str, set order, the clock); seed every random "
            "generator from the hyperparameters, e.g. with zlib.crc32 or hashlib instead of hash()")


# Windows a split shares with another: long enough that a real source repeats almost none (a 64-token
# window of the synthetic chain carries ~69 nats), sampled so the cost is one pass over the other split.
WINDOW_TOKENS, WINDOW_BYTES = 64, 256
SAMPLED_WINDOWS = 200
MAX_SHARED = 0.1  # more than this fraction of sampled windows found verbatim elsewhere: the splits overlap
_CHUNK = 1 << 20


def _as_ids(split: Any) -> np.ndarray:
    if isinstance(split, TextFile):
        split = split.read()
    if isinstance(split, str):
        return np.frombuffer(split.encode("utf-8"), dtype=np.uint8).astype(np.uint64)
    if isinstance(split, TokenShards):  # windows never straddle shards, but a kit-sized corpus is small
        return np.concatenate([np.asarray(a) for a in split.arrays]).astype(np.uint64)
    return np.asarray(split).astype(np.uint64)


_BASE = 0x9E3779B97F4A7C15  # odd, so invertible mod 2**64
_INVERSE = pow(_BASE, -1, 2**64)


def _powers(base: int, n: int) -> np.ndarray:
    """base**0 .. base**(n-1) mod 2**64."""
    with np.errstate(over="ignore"):
        return np.concatenate([np.ones(1, np.uint64), np.cumprod(np.full(n - 1, base, dtype=np.uint64))])[:n]


def _window_hashes(ids: np.ndarray, width: int, starts: np.ndarray) -> np.ndarray:
    """sum_k ids[s + k] * BASE**k mod 2**64 for each start s (uint64 arithmetic wraps)."""
    return ids[starts[:, None] + np.arange(width)[None, :]] @ _powers(_BASE, width)


def _all_window_hashes(ids: np.ndarray, width: int) -> np.ndarray:
    """The same hash for every window of ``ids``, in O(len) with prefix sums: the window at j is
    (P[j + width] - P[j]) * BASE**-j, where P sums ids[k] * BASE**k."""
    n = len(ids) - width + 1
    with np.errstate(over="ignore"):
        prefix = np.concatenate([np.zeros(1, np.uint64), np.cumsum(ids * _powers(_BASE, len(ids)), dtype=np.uint64)])
        return (prefix[width:width + n] - prefix[:n]) * _powers(_INVERSE, n)


def _found_in(ids: np.ndarray, wanted: np.ndarray, width: int) -> np.ndarray:
    """Which of the ``wanted`` window hashes occur anywhere in ``ids``, one chunk at a time."""
    ordered, inverse = np.unique(wanted, return_inverse=True)
    found = np.zeros(len(ordered), dtype=bool)
    for begin in range(0, max(len(ids) - width + 1, 0), _CHUNK):
        hashes = _all_window_hashes(ids[begin:begin + _CHUNK + width - 1], width)
        at = np.minimum(np.searchsorted(ordered, hashes), len(ordered) - 1)  # a few wanted, many hashes
        found[at[ordered[at] == hashes]] = True
    return found[inverse]


def check_splits_disjoint(case: DatasetCase) -> None:
    """Validation and test text must not be copied from the training split (or test from
    validation): sampled windows of each are looked up verbatim in the other."""
    corpus = case.build()
    width = WINDOW_BYTES if corpus.is_text else WINDOW_TOKENS
    unit = "byte" if corpus.is_text else "token"
    ids = {split: _as_ids(corpus.splits[split]) for split in SPLITS}
    for held_out, source in (("valid", "train"), ("test", "train"), ("test", "valid")):
        sample, other = ids[held_out], ids[source]
        if len(sample) < width or len(other) < width:
            continue
        starts = np.unique(np.linspace(0, len(sample) - width, SAMPLED_WINDOWS).astype(np.int64))
        shared = _found_in(other, _window_hashes(sample, width, starts), width).mean()
        require(shared <= MAX_SHARED,
                f"{shared:.0%} of {len(starts)} sampled {width}-{unit} windows of the {held_out!r} split occur "
                f"verbatim in the {source!r} split: the splits overlap, so {held_out} scores reward memorising; "
                "cut the splits from disjoint parts of the source")


def _same_ids(x: Any, y: Any) -> bool:
    xs = x.arrays if isinstance(x, TokenShards) else [x]
    ys = y.arrays if isinstance(y, TokenShards) else [y]
    return len(xs) == len(ys) and all(np.array_equal(a, b) for a, b in zip(xs, ys))


def check_entropy_rate(case: DatasetCase) -> None:
    rate = case.build().entropy_rate
    require(rate is None or (isinstance(rate, float) and rate >= 0),
            f"entropy_rate must be None (unknown) or a float >= 0 (nats/token), got {rate!r}")


KIND = KindChecks("dataset", (check_tag_matches_content, check_splits, check_token_ids, check_deterministic,
                              check_deterministic_across_processes, check_splits_disjoint, check_entropy_rate),
                  make_case)
