"""Dataset checks: ``factory(**hparams) -> bench.data.corpus.Corpus``, tagged ``"text"`` or ``"tokens"``.

A dataset whose files are missing raises ``bench.errors.DataMissingError``; the kit then skips its
checks instead of failing them.
"""

from __future__ import annotations

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


def _same_ids(x: Any, y: Any) -> bool:
    xs = x.arrays if isinstance(x, TokenShards) else [x]
    ys = y.arrays if isinstance(y, TokenShards) else [y]
    return len(xs) == len(ys) and all(np.array_equal(a, b) for a, b in zip(xs, ys))


def check_entropy_rate(case: DatasetCase) -> None:
    rate = case.build().entropy_rate
    require(rate is None or (isinstance(rate, float) and rate >= 0),
            f"entropy_rate must be None (unknown) or a float >= 0 (nats/token), got {rate!r}")


KIND = KindChecks("dataset", (check_tag_matches_content, check_splits, check_token_ids, check_deterministic,
                              check_entropy_rate), make_case)
