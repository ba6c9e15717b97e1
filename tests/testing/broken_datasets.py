"""Datasets that break the contract on purpose, for the kit's own tests. No torch import: the
cross-process check rebuilds them in a fresh interpreter, which should start quickly."""

from __future__ import annotations

import numpy as np

from bench.components import Component
from bench.data.corpus import Corpus


def overlapping_splits(tokens: int = 3000, data_seed: int = 0) -> Corpus:
    """The validation split is a slice of the training split (the test split is fine)."""
    rng = np.random.default_rng(data_seed)
    train = rng.integers(0, 50, tokens)
    return Corpus("overlap", {"train": train, "valid": train[500:1000].copy(), "test": rng.integers(0, 50, 500)},
                  vocab_size=50)


def hash_seeded(tokens: int = 2000, name: str = "corpus") -> Corpus:
    """Seeded from ``hash(name)``: the same in one process, different under another PYTHONHASHSEED."""
    rng = np.random.default_rng(hash(name) & 0xFFFFFFFF)
    return Corpus(name, {split: rng.integers(0, 50, tokens) for split in ("train", "valid", "test")}, vocab_size=50)


OVERLAP = Component("overlap", overlapping_splits, {"tokens": 3000, "data_seed": 0}, tags=frozenset({"tokens"}))
HASH_SEEDED = Component("hash-seeded", hash_seeded, {"tokens": 2000, "name": "corpus"}, tags=frozenset({"tokens"}))
