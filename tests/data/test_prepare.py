"""`bench data prepare`: inputs -> llm.c shards + manifest.json, deterministic and resumable."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bench.cli import main
from bench.data import encode, prepare
from bench.data.prepare_command import make_plan, parse_tokens
from bench.errors import ConfigError

EOT = 50256


def read_split(folder: Path, split: str) -> list[np.ndarray]:
    """The token arrays of a split's shards, read with numpy from the manifest's list."""
    manifest = json.loads((folder / "manifest.json").read_text())
    arrays = []
    for shard in manifest["splits"][split]:
        header = np.fromfile(folder / shard["file"], dtype="<i4", count=256)
        assert header[0] == 20240520 and header[1] == 1 and header[2] == shard["tokens"]
        tokens = np.fromfile(folder / shard["file"], dtype="<u2", offset=1024)
        assert len(tokens) == shard["tokens"]
        arrays.append(tokens)
    return arrays


def as_bytes(arrays: list[np.ndarray]) -> bytes:
    """The shards of a ``byte``-tokenized split as the bytes they encode."""
    return bytes(np.concatenate(arrays).astype(np.uint8))


def run(*args: str) -> int:
    return main(["data", "prepare", "--no-progress", *args])


@pytest.fixture
def gpt2():
    from bench_plugins.tokenizers import gpt2

    tokenizer = gpt2()
    try:
        tokenizer.encode("")
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"gpt2's BPE files are not available offline: {exc}")
    return tokenizer


@pytest.fixture
def inputs(tmp_path):
    """Three kinds of input holding five documents between them."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.txt").write_text("First Citizen:\nBefore we proceed any further, hear me speak.\n")
    with gzip.open(folder / "b.jsonl.gz", "wt") as handle:
        for text in ("Hello world", "ünïcode <|endoftext|> text", ""):
            handle.write(json.dumps({"text": text, "id": 1}) + "\n")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["A parquet row.", "Another one."]}), folder / "c.parquet")
    return folder


def documents_of(folder: Path) -> list[str]:
    return ["First Citizen:\nBefore we proceed any further, hear me speak.\n", "Hello world",
            "ünïcode <|endoftext|> text", "", "A parquet row.", "Another one."]


def test_round_trip_with_an_eot_before_every_document(tmp_path, inputs, gpt2, capsys):
    out = tmp_path / "shards"
    assert main(["data", "prepare", str(inputs), "--out", str(out), "--shard-tokens", "7", "--workers", "1"]) == 0
    expected = [i for doc in documents_of(inputs) for i in [EOT, *gpt2.encode(doc)]]
    shards = read_split(out, "train")
    assert np.concatenate(shards).tolist() == expected
    assert [len(s) for s in shards[:-1]] == [7] * (len(shards) - 1) and 0 < len(shards[-1]) <= 7
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format"] == "bench-token-shards" and manifest["version"] == 1
    assert manifest["tokenizer"] == {"name": "gpt2", "vocab_size": 50257, "eot_id": EOT}
    assert list(manifest["splits"]) == ["train"]
    assert manifest["splits"]["train"][0] == {"file": "train_000000.bin", "tokens": 7,
                                              "sha256": prepare.sha256_file(out / "train_000000.bin")}
    assert [Path(e["path"]).name for e in manifest["source"]["inputs"]["train"]] == ["a.txt", "b.jsonl.gz",
                                                                                     "c.parquet"]
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json"] + [f"train_{i:06d}.bin" for i in
                                                                         range(len(shards))]
    err = capsys.readouterr().err
    assert "tokens/s" in err and f"bench: wrote train {len(expected):,} tokens in {len(shards)} shard(s)" in err
    # The same command again finds the work done.
    assert run(str(inputs), "--out", str(out), "--shard-tokens", "7", "--workers", "1") == 0
    assert "nothing to do" in capsys.readouterr().err


def test_held_out_documents_and_separate_split_inputs(tmp_path, inputs):
    byte = ["--tokenizer", "byte", "--workers", "1"]
    assert run(str(inputs), "--out", str(tmp_path / "held"), "--valid-docs", "2", "--test-docs", "1", *byte) == 0
    docs = [d.encode() for d in documents_of(inputs)]  # byte has no EOT: documents just follow each other
    held = tmp_path / "held"
    assert as_bytes(read_split(held, "valid")) == docs[0] + docs[1]
    assert as_bytes(read_split(held, "test")) == docs[2]
    assert as_bytes(read_split(held, "train")) == b"".join(docs[3:])
    assert json.loads((held / "manifest.json").read_text())["tokenizer"]["eot_id"] is None
    assert run(str(inputs / "a.txt"), "--valid", str(inputs / "c.parquet"), "--out", str(tmp_path / "sep"),
               *byte) == 0
    manifest = json.loads((tmp_path / "sep" / "manifest.json").read_text())
    assert list(manifest["splits"]) == ["train", "valid"]
    assert as_bytes(read_split(tmp_path / "sep", "valid")) == docs[4] + docs[5]


def test_zstd_and_another_field(tmp_path):
    import zstandard

    path = tmp_path / "d.jsonl.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(b'{"body": "zst text"}\n\n{"body": "more"}\n'))
    assert run(str(path), "--out", str(tmp_path / "o"), "--field", "body", "--tokenizer", "byte") == 0
    assert as_bytes(read_split(tmp_path / "o", "train")) == b"zst textmore"


def test_a_hugging_face_dataset_from_a_local_folder(tmp_path, monkeypatch):
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "train.jsonl").write_text('{"text": "hf one"}\n{"text": "hf two"}\n')
    assert run("--hf", str(tmp_path / "ds"), "--out", str(tmp_path / "o"), "--tokenizer", "byte") == 0
    assert as_bytes(read_split(tmp_path / "o", "train")) == b"hf onehf two"


def _big_text(n_docs: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    words = np.array(["the", "cat", "sat", "on", "a", "mat", "ünï", "42,", "don't", "\n", " ", "Title"])
    return ["".join(" " + w for w in rng.choice(words, size=int(rng.integers(5, 400)))) for _ in range(n_docs)]


def test_the_worker_count_does_not_change_a_byte(tmp_path, monkeypatch, gpt2):
    monkeypatch.setattr(encode, "TASK_CHARS", 3000)  # many tasks, so workers really interleave
    monkeypatch.setattr(encode, "CHUNK_CHARS", 500)  # and long documents are cut into pieces
    source = tmp_path / "docs.jsonl"
    source.write_text("".join(json.dumps({"text": t}) + "\n" for t in _big_text(300)))
    outs = {}
    for workers in (1, 3):
        outs[workers] = tmp_path / f"w{workers}"
        assert run(str(source), "--out", str(outs[workers]), "--shard-tokens", "5000", "--workers", str(workers),
                   "--valid-docs", "10") == 0
    for name in sorted(p.name for p in outs[1].iterdir()):
        assert (outs[1] / name).read_bytes() == (outs[3] / name).read_bytes(), name
    assert sorted(p.name for p in outs[1].iterdir()) == sorted(p.name for p in outs[3].iterdir())
    expected = [i for t in _big_text(300)[10:] for i in [EOT, *gpt2.encode(t)]]
    assert np.concatenate(read_split(outs[3], "train")).tolist() == expected


def test_an_interrupted_prepare_resumes_verifying_its_shards(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(encode, "TASK_CHARS", 2000)
    source = tmp_path / "docs.jsonl"
    source.write_text("".join(json.dumps({"text": t}) + "\n" for t in _big_text(200, seed=1)))
    args = [str(source), "--shard-tokens", "3000", "--tokenizer", "byte", "--workers", "2"]
    assert run(*args, "--out", str(tmp_path / "whole")) == 0
    closes = []
    real_close = prepare.ShardWriter._close

    def interrupted_close(self):  # a Ctrl-C arriving while the fourth shard is being finished
        closes.append(1)
        if len(closes) == 4:
            raise KeyboardInterrupt
        real_close(self)

    monkeypatch.setattr(prepare.ShardWriter, "_close", interrupted_close)
    assert run(*args, "--out", str(tmp_path / "cut")) == 130
    assert "interrupted; run the same command again to resume" in capsys.readouterr().err
    monkeypatch.setattr(prepare.ShardWriter, "_close", real_close)
    cut = tmp_path / "cut"
    assert not (cut / "manifest.json").exists()
    assert [s["file"] for s in json.loads((cut / prepare.STATE).read_text())["splits"]["train"]["shards"]] == \
        ["train_000000.bin", "train_000001.bin", "train_000002.bin"]
    with open(cut / "train_000001.bin", "r+b") as handle:  # damage one finished shard
        handle.seek(2000)
        handle.write(b"X")
    kept = (cut / "train_000000.bin").stat().st_mtime_ns
    capsys.readouterr()
    assert run(*args, "--out", str(cut)) == 0
    err = capsys.readouterr().err
    assert "train_000001.bin is missing or damaged; redoing train from shard 1" in err
    assert "resuming train: 1 finished shard(s) verified and kept" in err
    assert (cut / "train_000000.bin").stat().st_mtime_ns == kept
    assert sorted(p.name for p in cut.iterdir()) == sorted(p.name for p in (tmp_path / "whole").iterdir())
    for path in (tmp_path / "whole").iterdir():
        assert (cut / path.name).read_bytes() == path.read_bytes(), path.name


def test_a_prepare_killed_after_its_first_shard_resumes_to_identical_bytes(tmp_path, monkeypatch, capsys, gpt2):
    """SIGKILL of a real `bench data prepare` process, then the same command again."""
    source = tmp_path / "docs.jsonl"
    with source.open("w") as handle:  # ~1.5 MB in 20 k-character tasks: ~70 tasks of real GPT-2 work
        for text in _big_text(3000, seed=2):
            handle.write(json.dumps({"text": text}) + "\n")
    args = [str(source), "--shard-tokens", "50000", "--workers", "1", "--no-progress"]
    command = [sys.executable, "-c", "import sys; from bench.data import encode; encode.TASK_CHARS = 20_000; "
               "from bench.cli import main; sys.exit(main(sys.argv[1:]))", "data", "prepare", *args]
    env = {**os.environ, "BENCH_DISABLE_PLUGIN_AUTOLOAD": "1"}
    killed = subprocess.Popen([*command, "--out", str(tmp_path / "killed")], env=env, stderr=subprocess.PIPE)
    state = tmp_path / "killed" / prepare.STATE
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and killed.poll() is None:
        try:
            if json.loads(state.read_text())["splits"]["train"]["shards"]:
                break
        except (FileNotFoundError, ValueError, KeyError):
            pass
        time.sleep(0.005)
    assert killed.poll() is None, "the prepare finished before it could be killed; give it more input"
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert not (tmp_path / "killed" / "manifest.json").exists()
    monkeypatch.setattr(encode, "TASK_CHARS", 20_000)
    capsys.readouterr()
    assert main(["data", "prepare", *args, "--out", str(tmp_path / "killed")]) == 0  # the same command, in-process
    assert "verified and kept" in capsys.readouterr().err
    assert main(["data", "prepare", *args, "--workers", "2", "--out", str(tmp_path / "whole")]) == 0
    names = sorted(p.name for p in (tmp_path / "whole").iterdir())
    assert len(names) > 3 and sorted(p.name for p in (tmp_path / "killed").iterdir()) == names
    for name in names:
        assert (tmp_path / "killed" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name


# -- bad input: one line, exit 2, nothing written -------------------------------------------------

def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bench: error: "), err
    return err[0]


@pytest.mark.parametrize("case, expected", [
    ("missing", "does not exist"),
    ("no-text-field", "no string field 'text'"),
    ("not-json", "not a JSON line"),
    ("unknown-tokenizer", "unknown tokenizer 'gtp2'"),
    ("bad-shard-tokens", "--shard-tokens"),
    ("parquet-without-column", "no string column 'text'"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, case, expected):
    good = tmp_path / "good.txt"
    good.write_text("fine text\n")
    args = {"missing": [str(tmp_path / "nope.jsonl")],
            "no-text-field": [str(tmp_path / "bad.jsonl")],
            "not-json": [str(tmp_path / "broken.jsonl")],
            "unknown-tokenizer": [str(good), "--tokenizer", "gtp2"],
            "bad-shard-tokens": [str(good), "--shard-tokens", "lots"],
            "parquet-without-column": [str(tmp_path / "t.parquet")]}[case]
    (tmp_path / "bad.jsonl").write_text('{"content": "x"}\n')
    (tmp_path / "broken.jsonl").write_text('{"text": "x"\n')
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "t.parquet")
    out = tmp_path / "out"
    assert run(*args, "--out", str(out), "--tokenizer", "byte") == 2 if case != "unknown-tokenizer" else \
        run(*args, "--out", str(out)) == 2
    assert expected in _one_error_line(capsys)
    assert not out.exists()


def test_a_bad_record_deep_in_the_input_removes_what_was_written(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(encode, "TASK_CHARS", 100)
    source = tmp_path / "late.jsonl"
    source.write_text("".join(json.dumps({"text": "x" * 50}) + "\n" for _ in range(100)) + '{"txt": 1}\n')
    out = tmp_path / "out"
    assert run(str(source), "--out", str(out), "--tokenizer", "byte", "--shard-tokens", "100") == 2
    assert f"{source}:101: no string field 'text'" in _one_error_line(capsys)
    assert not out.exists()


def test_an_output_folder_holding_something_else_is_refused(tmp_path, capsys):
    good = tmp_path / "good.txt"
    good.write_text("fine text\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.md").write_text("mine")
    assert run(str(good), "--out", str(out), "--tokenizer", "byte") == 2
    assert "holds files bench data prepare did not write (notes.md)" in _one_error_line(capsys)
    assert sorted(p.name for p in out.iterdir()) == ["notes.md"]
    (out / "notes.md").unlink()
    assert run(str(good), "--out", str(out), "--tokenizer", "byte") == 0
    capsys.readouterr()
    good.write_text("other text\n")  # the folder now holds shards of what good.txt was
    assert run(str(good), "--out", str(out), "--tokenizer", "byte") == 2
    assert "holds shards prepared from other inputs or options (inputs.train[0]" in _one_error_line(capsys)


def test_parse_tokens_and_plan_checks(tmp_path):
    assert parse_tokens("100M") == 100_000_000 and parse_tokens("1e6") == 1_000_000
    assert parse_tokens("50_000") == 50_000 and parse_tokens("2k") == 2000
    for bad in ("0", "-5", "1.5", "many"):
        with pytest.raises(ConfigError):
            parse_tokens(bad)
    good = tmp_path / "g.txt"
    good.write_text("x")
    with pytest.raises(ConfigError, match="not both"):
        make_plan(out=str(tmp_path / "o"), train=[str(good)], valid=[str(good)], test=[], field="text", workers=1,
                  shard_tokens="10", valid_docs=3, test_docs=0)
