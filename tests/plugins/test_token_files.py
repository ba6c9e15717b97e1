"""The built-in token-files dataset: every format read in place, manifests, the held-out cut, and
every malformed file refused with one line (exit 2) before anything trains."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from bench import cli
from bench.data.shards import TokenShards
from bench.errors import DataMissingError
from bench.testing import parametrize_with_checks
from bench_plugins import token_files as tf
from bench_plugins.token_files import token_files, write_llmc_shard

VOCAB = 300


def _kit_files() -> str:
    """Shards for the contract check, written when the module is collected (parametrize needs the
    configuration then) and removed when the session ends."""
    folder = Path(tempfile.mkdtemp(prefix="token-files-kit-"))
    atexit.register(shutil.rmtree, folder, True)
    for i in range(2):
        write_llmc_shard(folder / f"train_{i}.bin", np.arange(3000) * (i + 3) % VOCAB)
    return str(folder / "train_*.bin")


@parametrize_with_checks(datasets=[(tf.bench_datasets()[0], {"train": _kit_files(), "vocab_size": VOCAB})])
def test_contract(check):
    check()


def _ids(n: int, seed: int = 0, high: int = VOCAB) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, high, n).astype(np.int64)


def _only(split: TokenShards) -> np.ndarray:
    assert len(split.arrays) == 1
    return split.arrays[0]


@pytest.mark.parametrize("fmt", ["llmc-v1", "llmc-v2", "raw-uint16", "raw-uint32", "npy", "npz"])
def test_every_format_round_trips_memory_mapped(tmp_path, fmt):
    ids = {split: _ids(1000 + i, seed=i) for i, split in enumerate(("train", "valid", "test"))}
    keys = {}
    for split, values in ids.items():
        if fmt.startswith("llmc"):
            path = tmp_path / f"{split}.bin"
            write_llmc_shard(path, values, version=int(fmt[-1]))
        elif fmt.startswith("raw"):
            path = tmp_path / f"{split}.bin"
            path.write_bytes(values.astype("<" + {"raw-uint16": "u2", "raw-uint32": "u4"}[fmt]).tobytes())
            keys["token_dtype"] = fmt[4:]
        elif fmt == "npy":
            path = tmp_path / f"{split}.npy"
            np.save(path, values.astype(np.int32))
        else:
            path = tmp_path / f"{split}.npz"
            np.savez(path, tokens=values.astype(np.uint16), other=np.zeros(3))
            keys["npz_key"] = "tokens"
        keys[split] = str(path)
    corpus = token_files(vocab_size=VOCAB, **keys)
    assert corpus.vocab_size == VOCAB
    for split, values in ids.items():
        array = _only(corpus.splits[split])
        assert isinstance(array, np.memmap), "the file must be mapped, not read into memory"
        np.testing.assert_array_equal(np.asarray(array), values)


def test_relative_globs_resolve_under_the_data_dir_sorted_by_name(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_DATA_DIR", str(tmp_path))
    (tmp_path / "fw").mkdir()
    parts = [_ids(500, seed=i) for i in range(3)]
    for i, part in enumerate(parts):
        write_llmc_shard(tmp_path / "fw" / f"fineweb_train_{i:06d}.bin", part)
    write_llmc_shard(tmp_path / "fw" / "fineweb_val_000000.bin", _ids(400, seed=9))
    corpus = token_files(train="fw/fineweb_train_*.bin", valid="fw/fineweb_val_*.bin", vocab_size=VOCAB)
    train = corpus.splits["train"]
    assert [Path(n).name for n in train.names[:2]] == ["fineweb_train_000000.bin", "fineweb_train_000001.bin"]
    # test was not given: the held-out cut takes the end of the last train shard
    held = max(2, int(np.ceil(0.005 * 1500)))
    assert len(corpus.splits["test"]) == held and len(train) == 1500 - held
    np.testing.assert_array_equal(np.concatenate([*train.arrays, *corpus.splits["test"].arrays]),
                                  np.concatenate(parts))


def test_held_out_cut_is_deterministic_and_disjoint(tmp_path):
    ids = _ids(10_000)
    write_llmc_shard(tmp_path / "train.bin", ids)
    a = token_files(train=str(tmp_path / "train.bin"), vocab_size=VOCAB, holdout_fraction=0.1)
    b = token_files(train=str(tmp_path / "train.bin"), vocab_size=VOCAB, holdout_fraction=0.1)
    joined = [np.concatenate(c.splits[s].arrays) for c in (a, b) for s in ("train", "valid", "test")]
    np.testing.assert_array_equal(np.concatenate(joined[:3]), ids)  # train | valid | test, in file order
    for x, y in zip(joined[:3], joined[3:]):
        np.testing.assert_array_equal(x, y)
    assert [len(j) for j in joined[:3]] == [8000, 1000, 1000]


def _prepared(folder: Path, vocab: int = VOCAB, splits=("train", "valid")) -> dict[str, list[np.ndarray]]:
    """A folder as `bench data prepare` writes it: llm.c shards and manifest.json."""
    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, list[np.ndarray]] = {}
    manifest: dict = {"format": "bench-token-shards", "version": 1,
                      "tokenizer": {"name": "byte", "vocab_size": vocab, "eot_id": None},
                      "source": {"inputs": ["x.jsonl"]}, "splits": {}}
    for s, split in enumerate(splits):
        entries = []
        for i in range(2):
            ids = _ids(700 + i, seed=10 * s + i, high=vocab)
            name = f"{split}_{i:06d}.bin"
            write_llmc_shard(folder / name, ids)
            entries.append({"file": name, "tokens": len(ids), "sha256": "not-checked"})
            written.setdefault(split, []).append(ids)
        manifest["splits"][split] = entries
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return written


def test_a_manifest_gives_shards_and_vocabulary(tmp_path):
    written = _prepared(tmp_path / "prepared")
    for where in (tmp_path / "prepared", tmp_path / "prepared" / "manifest.json"):
        corpus = token_files(manifest=str(where))
        assert corpus.vocab_size == VOCAB
        for got, want in zip(corpus.splits["valid"].arrays, written["valid"]):
            np.testing.assert_array_equal(got, want)
        # no test split listed: held out from the end of train
        held = int(np.ceil(0.005 * 1401))
        assert len(corpus.splits["test"]) == held
        np.testing.assert_array_equal(np.concatenate([*corpus.splits["train"].arrays, *corpus.splits["test"].arrays]),
                                      np.concatenate(written["train"]))


def test_manifest_shards_are_trusted_not_scanned(tmp_path, monkeypatch):
    _prepared(tmp_path / "prepared")
    monkeypatch.setattr(tf, "id_range", lambda *a: pytest.fail("a manifest's shards must not be scanned"))
    token_files(manifest=str(tmp_path / "prepared"))


def test_id_range_is_scanned_once_per_file_identity(tmp_path, monkeypatch):
    path = tmp_path / "train.bin"
    write_llmc_shard(path, _ids(3000))
    scans = []
    real_scan = tf.scan_range
    monkeypatch.setattr(tf, "SCAN_CHUNK", 1000)  # several chunks
    monkeypatch.setattr(tf, "scan_range", lambda array: scans.append(len(array)) or real_scan(array))
    token_files(train=str(path), vocab_size=VOCAB)
    assert scans == [3000]
    token_files(train=str(path), vocab_size=VOCAB)
    assert scans == [3000], "an unchanged file is not read again"
    write_llmc_shard(path, _ids(3000, seed=1) % 40 + 260)  # ids up to 299 still
    os.utime(path, ns=(1, 1))  # a different mtime: a new identity, scanned again
    token_files(train=str(path), vocab_size=VOCAB)
    assert scans == [3000, 3000]
    with pytest.raises(ValueError, match="id 299"):
        token_files(train=str(path), vocab_size=299)  # the remembered range still refuses a smaller vocabulary
    assert tf.scan_range(np.array([5, 1, 9, 3, 7])) == (1, 9)


def test_vocab_size_comes_from_a_named_tokenizer(tmp_path):
    write_llmc_shard(tmp_path / "t.bin", _ids(1000, high=256))
    assert token_files(train=str(tmp_path / "t.bin"), tokenizer_name="byte").vocab_size == 256
    with pytest.raises(ValueError, match="vocab_size"):
        token_files(train=str(tmp_path / "t.bin"))


# -- malformed input: one line, exit 2, nothing trained ---------------------------------------------


def _llmc_with(path: Path, *, magic=tf.LLMC_MAGIC, version=1, count=100, tokens=100) -> str:
    header = np.zeros(256, dtype="<i4")
    header[:3] = magic, version, count
    path.write_bytes(header.tobytes() + _ids(tokens).astype("<u2").tobytes())
    return str(path)


def _compressed_npz(path: Path) -> str:
    np.savez_compressed(path, tokens=_ids(100).astype(np.uint16))
    return str(path)


def _odd_raw(path: Path) -> str:
    path.write_bytes(b"\x01\x00" * 100 + b"\x07")
    return str(path)


def _truncated_npz(path: Path) -> str:
    np.savez(path, tokens=_ids(1000).astype(np.uint16))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return str(path)


MALFORMED = {
    "bad-magic": (lambda p: {"train": _llmc_with(p / "a.bin", magic=1234)}, "bad magic 1234"),
    "bad-version": (lambda p: {"train": _llmc_with(p / "a.bin", version=7)}, "version 7"),
    "truncated": (lambda p: {"train": _llmc_with(p / "a.bin", count=100, tokens=60)}, "truncated"),
    "trailing": (lambda p: {"train": _llmc_with(p / "a.bin", count=50, tokens=100)}, "trailing bytes"),
    "header-only-part": (lambda p: {"train": (p / "a.bin").write_bytes(b"\0" * 100) and str(p / "a.bin")},
                         "shorter than an llm.c shard"),
    "odd-bytes": (lambda p: {"train": _odd_raw(p / "a.bin"), "token_dtype": "uint16"}, "odd byte count"),
    "id-too-large": (lambda p: {"train": _llmc_with(p / "a.bin"), "vocab_size": 50}, "outside [0, vocab_size=50)"),
    "no-match": (lambda p: {"train": str(p / "nothing_*.bin")}, "matches no file"),
    "compressed-npz": (lambda p: {"train": _compressed_npz(p / "a.npz")}, "cannot be memory-mapped"),
    "truncated-npz": (lambda p: {"train": _truncated_npz(p / "a.npz")}, "npz"),
    "2d-npy": (lambda p: {"train": (np.save(p / "a.npy", np.zeros((3, 3), dtype=np.int32)), str(p / "a.npy"))[1]},
               "1-D integer"),
    "manifest-count": (lambda p: _bad_manifest(p), "records"),
}


def _bad_manifest(p: Path) -> dict:
    _prepared(p / "prep")
    document = json.loads((p / "prep" / "manifest.json").read_text())
    document["splits"]["train"][0]["tokens"] += 1
    (p / "prep" / "manifest.json").write_text(json.dumps(document))
    return {"manifest": str(p / "prep")}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_files_are_one_line_and_exit_2_before_training(case, tmp_path, write_matrix, capsys):
    make, words = MALFORMED[case]
    keys = {"vocab_size": VOCAB, **make(tmp_path)}
    if "manifest" in keys:
        keys.pop("vocab_size")
    settings = "\n".join(f"{k} = {json.dumps(v)}" for k, v in keys.items())
    matrix = write_matrix(f"""
        [defaults]
        dataset = "token-files"
        model = "lstm"
        optimizer = "adamw"
        n_embd = 8
        n_hidden = 8
        seq_len = 8
        batch_size = 2
        max_steps = 2
        {settings}
        """.replace("\n        ", "\n"))
    code = cli.main(["run", str(matrix), "--device", "cpu", "--outputs", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and words in err, err
    assert not list((tmp_path / "out").rglob("metrics.jsonl")), "nothing trains"


def test_errors_raised_by_the_factory_are_value_or_missing_errors(tmp_path):
    with pytest.raises(DataMissingError):
        token_files()
    with pytest.raises(ValueError, match="either manifest"):
        token_files(train="a.bin", manifest="m")
    with pytest.raises(ValueError, match="token_dtype"):
        token_files(train="a.bin", token_dtype="int8")


def test_an_npz_with_several_arrays_needs_npz_key(tmp_path):
    np.savez(tmp_path / "a.npz", a=np.arange(10), b=np.arange(5))
    with pytest.raises(ValueError, match="set npz_key"):
        token_files(train=str(tmp_path / "a.npz"), vocab_size=VOCAB)
    with zipfile.ZipFile(tmp_path / "a.npz") as archive:
        assert {i.compress_type for i in archive.infolist()} == {zipfile.ZIP_STORED}
