"""The built-in datasets: synthetic sources with known floors, and the text corpora."""

from __future__ import annotations

import inspect
import math
import os
from pathlib import Path

import numpy as np
import pluggy
import pytest

from bench import hookspecs
from bench.data.corpus import SPLITS
from bench.errors import DataMissingError
from bench.testing import parametrize_with_checks
from bench_plugins import datasets
from bench_plugins.datasets import (
    markov_chain,
    random_tokens,
    split_at_newlines,
    stationary_distribution,
    synthetic,
    text,
    tinyshakespeare,
    wikitext2,
)


def _registered() -> dict:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.register(datasets)
    return {c.name: c for batch in pm.hook.bench_datasets() for c in batch}


def _real_data(*relative: str) -> None:
    """Skip unless BENCH_DATA_DIR (set by the test runner) holds these files."""
    root = os.environ.get("BENCH_DATA_DIR")
    if not root or not all((Path(root) / rel).is_file() for rel in relative):
        pytest.skip(f"BENCH_DATA_DIR does not hold {', '.join(relative)}")


@pytest.fixture
def offline(monkeypatch):
    """Real-data tests must never reach for the network."""
    monkeypatch.setenv("BENCH_OFFLINE", "1")


def _kit_specs() -> list:
    """Every built-in dataset, small; the real corpora skip (DataMissingError) without BENCH_DATA_DIR."""
    components = {c.name: c for c in datasets.bench_datasets()}
    wikitext = Path(os.environ.get("BENCH_DATA_DIR", "/nonexistent")) / "wikitext-2"
    return [
        (components["synthetic"], {"train_tokens": 2000, "valid_tokens": 500, "test_tokens": 500}),
        (components["random-tokens"], {}),
        (components["text"], {f"{split}_path": str(wikitext / f"{split}.txt")  # three files: disjoint splits
                              for split in ("train", "valid", "test")} | {"max_chars": 5000}),
        (components["wikitext2"], {"max_chars": 5000}),
        (components["tinyshakespeare"], {}),
    ]


@parametrize_with_checks(datasets=_kit_specs())
def test_contract(check, offline):
    check()


def test_registration_names_tags_and_defaults():
    components = _registered()
    assert set(components) == {"synthetic", "random-tokens", "text", "wikitext2", "tinyshakespeare"}
    for name in ("synthetic", "random-tokens"):
        assert components[name].tags == {"tokens"}
    for name in ("text", "tinyshakespeare"):
        assert components[name].tags == {"text"}
    assert components["wikitext2"].tags == {"text", "words"}  # word-level: reports add per-word perplexity
    for component in components.values():
        # defaults are the complete keyword set, and agree with the factory's own defaults
        params = inspect.signature(component.factory).parameters
        assert dict(component.defaults) == {k: p.default for k, p in params.items()}


# -- synthetic -------------------------------------------------------------------------------


def test_synthetic_is_deterministic_in_its_seed():
    a, b, c = synthetic(), synthetic(), synthetic(data_seed=1)
    for split in SPLITS:
        np.testing.assert_array_equal(a.splits[split], b.splits[split])
    assert a.entropy_rate == b.entropy_rate
    assert not np.array_equal(a.splits["train"], c.splits["train"])


def test_synthetic_shapes_and_notes():
    corpus = synthetic(vocab_size=50, train_tokens=1000, valid_tokens=200, test_tokens=300)
    assert not corpus.is_text and corpus.vocab_size == 50
    assert [len(corpus.splits[s]) for s in SPLITS] == [1000, 200, 300]
    assert all(corpus.splits[s].dtype == np.uint16 and corpus.splits[s].max() < 50 for s in SPLITS)
    assert "perplexity floor = exp(entropy rate)" in corpus.notes["floor"]
    assert f"{math.exp(corpus.entropy_rate):.3f}" in corpus.notes["floor"]


def test_synthetic_empirical_entropy_matches_analytic_rate():
    corpus = synthetic()
    x = np.concatenate([corpus.splits[s] for s in SPLITS]).astype(np.int64)
    v = corpus.vocab_size
    counts = np.bincount(x[:-1] * v + x[1:], minlength=v * v).reshape(v, v).astype(float)
    seen = counts > 0
    cond = counts / counts.sum(axis=1, keepdims=True).clip(min=1)
    empirical = -(counts[seen] * np.log(cond[seen])).sum() / counts.sum()
    assert empirical == pytest.approx(corpus.entropy_rate, rel=0.03)
    assert np.all(x[:-1] != x[1:])  # no self-loops
    assert seen.sum(axis=1).max() <= 4  # sparse: at most `branching` successors per token
    assert 0 < corpus.entropy_rate < math.log(4)


def test_markov_chain_is_irreducible_and_aperiodic():
    rng = np.random.default_rng(3)
    succ, prob = markov_chain(10, 2, 0.5, rng)
    assert np.all(succ != np.arange(10)[:, None]) and np.allclose(prob.sum(axis=1), 1)
    assert all(len(set(row)) == 2 for row in succ.tolist())
    dense = np.zeros((10, 10))
    np.put_along_axis(dense, succ, prob, axis=1)
    # a power of P with every entry positive = irreducible and aperiodic (primitive)
    assert np.all(np.linalg.matrix_power(dense, 200) > 0)
    pi = stationary_distribution(succ, prob)
    np.testing.assert_allclose(pi @ dense, pi, atol=1e-12)


@pytest.mark.parametrize(
    "kwargs",
    [{"vocab_size": 2}, {"branching": 1}, {"vocab_size": 8, "branching": 8}, {"alpha": 0}, {"train_tokens": 0}]
)
def test_synthetic_rejects_impossible_settings(kwargs):
    with pytest.raises(ValueError):
        synthetic(**kwargs)


# -- random-tokens ---------------------------------------------------------------------------


def test_random_tokens_in_range_with_ln_k_floor():
    corpus = random_tokens(k=5, vocab_size=12, data_seed=7)
    assert corpus.vocab_size == 12 and corpus.entropy_rate == pytest.approx(math.log(5))
    assert [len(corpus.splits[s]) for s in SPLITS] == [50_000, 10_000, 10_000]
    train = corpus.splits["train"]
    assert train.min() == 0 and train.max() == 4
    freq = np.bincount(train, minlength=5) / len(train)
    np.testing.assert_allclose(freq, 0.2, atol=0.01)
    np.testing.assert_array_equal(train, random_tokens(k=5, vocab_size=12, data_seed=7).splits["train"])


def test_random_tokens_vocab_must_hold_k():
    with pytest.raises(ValueError, match="vocab_size"):
        random_tokens(k=8, vocab_size=4)


# -- text ------------------------------------------------------------------------------------


def test_text_reads_three_files_and_truncates(tmp_path):
    paths = {}
    for split in SPLITS:
        paths[f"{split}_path"] = str(tmp_path / f"{split}.txt")
        Path(paths[f"{split}_path"]).write_text(f"{split} text ünï\n" * 10, encoding="utf-8")
    corpus = text(**paths)
    assert corpus.is_text and corpus.splits["valid"].read() == "valid text ünï\n" * 10
    assert all(len(s.read()) == 5 for s in text(**paths, max_chars=5).splits.values())
    assert text(**paths, max_chars=13).splits["train"].read() == "train text ün"  # characters, not bytes


def test_text_missing_path_names_the_key(tmp_path):
    (tmp_path / "a.txt").write_text("a")
    with pytest.raises(DataMissingError, match="valid_path"):
        text(train_path=str(tmp_path / "a.txt"), test_path=str(tmp_path / "a.txt"))
    with pytest.raises(DataMissingError, match="test_path"):
        text(train_path=str(tmp_path / "a.txt"), valid_path=str(tmp_path / "a.txt"), test_path=str(tmp_path / "no.txt"))


# -- wikitext2 / tinyshakespeare -------------------------------------------------------------


def test_wikitext2_missing_offline_error(tmp_path, monkeypatch, offline):
    monkeypatch.setenv("BENCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    with pytest.raises(DataMissingError) as info:
        wikitext2()
    msg = str(info.value)
    assert msg.startswith("dataset 'wikitext2' needs wikitext-2/train.txt, valid.txt, test.txt under ")
    assert "BENCH_DATA_DIR" in msg and "raw.githubusercontent.com/pytorch/examples" in msg


def test_wikitext2_from_data_dir(offline):
    _real_data("wikitext-2/train.txt", "wikitext-2/valid.txt", "wikitext-2/test.txt")
    corpus = wikitext2()
    assert corpus.is_text
    train = corpus.splits["train"].read()
    assert train.startswith(" \n = Valkyria Chronicles III = \n")
    assert len(train.encode("utf-8")) == 10_797_148
    assert len(train.splitlines()) == 36_718
    short = wikitext2(max_chars=1000)
    assert all(len(short.splits[s].read()) == 1000 for s in SPLITS)


def test_split_at_newlines_tiles_and_snaps():
    content = "aaaa\nbbbb\ncccc\ndddd\n"
    assert split_at_newlines(content, (0.5, 0.75)) == ["aaaa\nbbbb\ncccc\n", "dddd\n", ""]
    assert split_at_newlines("no newline", (0.5,)) == ["no newline", ""]


def test_tinyshakespeare_splits_cover_the_file_without_overlap(offline):
    _real_data("tinyshakespeare/input.txt")
    content = (Path(os.environ["BENCH_DATA_DIR"]) / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
    corpus = tinyshakespeare()
    train, valid, test = (corpus.splits[s].read() for s in SPLITS)
    assert train + valid + test == content
    assert train.endswith("\n") and valid.endswith("\n")
    n = len(content)
    assert 0.90 * n <= len(train) < 0.90 * n + 200
    assert 0.04 * n < len(valid) <= 0.05 * n + 200 and 0.04 * n < len(test) <= 0.05 * n
    assert train.startswith("First Citizen:")
