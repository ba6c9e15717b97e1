"""The `bench` command end to end, as a user runs it: real subprocesses, real files."""

from __future__ import annotations

import json

import pytest

from tests.conftest import TINY_DEFAULTS

TINY_GRID = TINY_DEFAULTS + """
[matrix]
model = ["lstm", "gpt1"]
optimizer = ["sgd", "adamw"]
n_layer = [1]
include = [{ model = "gpt1", optimizer = "adamw", n_layer = 2 }]
"""


def test_run_then_report_end_to_end(bench_cli, write_matrix, tmp_path):
    matrix = write_matrix(TINY_GRID)
    run = bench_cli("run", str(matrix))
    assert run.returncode == 0, run.stderr
    assert "5 trained" in run.stderr
    cell_dirs = sorted((tmp_path / "outputs" / "tiny").iterdir())
    assert len(cell_dirs) == 5
    for cell_dir in cell_dirs:
        summary = json.loads((cell_dir / "summary.json").read_text())
        assert summary["status"] == "ok"
        epochs = [json.loads(line) for line in (cell_dir / "metrics.jsonl").read_text().splitlines()]
        assert [row["epoch"] for row in epochs if row["kind"] == "epoch"] == [1, 2]
        assert summary["eval_tokens"]["test"] == 599  # every test token but the first, exactly once

    report = bench_cli("report", "--sort", "time")
    assert report.returncode == 0, report.stderr
    perplexity = report.stdout.split("## tiny: perplexity")[1].split("\n## ")[0]
    table_rows = [line for line in perplexity.splitlines()
                  if line.startswith("|") and ("lstm" in line or "gpt1" in line)]
    assert len(table_rows) == 5

    again = bench_cli("run", str(matrix))
    assert again.returncode == 0 and "5 already complete" in again.stderr


def test_dry_run_lists_cells_and_trains_nothing(bench_cli, write_matrix, tmp_path):
    result = bench_cli("run", str(write_matrix(TINY_GRID)), "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "5 cells" in result.stdout and "gpt1-L2-adamw" in result.stdout
    assert not (tmp_path / "outputs").exists()


def test_hw3_dry_run_shows_twelve_cells_with_parameter_counts(bench_cli):
    from tests.conftest import REPO
    result = bench_cli("run", str(REPO / "matrices" / "hw3.toml"), "--dry-run")
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if "-L" in line]
    assert len(rows) == 12
    assert all("," in row for row in rows)  # formatted parameter counts


def test_list_shows_every_kind(bench_cli):
    result = bench_cli("list")
    assert result.returncode == 0
    for heading in ("models (3)", "optimizers (8)", "datasets (", "tokenizers (", "schedules (4)"):
        assert heading in result.stdout
    for name in ("gpt2-tiny", "momentum", "synthetic", "wikitext2", "tinyshakespeare", "cosine", "wsd"):
        assert name in result.stdout


BAD_INPUTS = {
    "malformed-toml": ("[defaults]\nmodel = \"lstm\"\nlr = = 1\n", {}, "line 3"),
    "unknown-model": (TINY_DEFAULTS + '[matrix]\nmodel = ["lsmt"]\noptimizer = ["sgd"]\n', {}, "did you mean 'lstm'"),
    "unknown-optimizer": (TINY_DEFAULTS + '[matrix]\nmodel = ["lstm"]\noptimizer = ["adamww"]\n', {}, "'adamw'"),
    "unknown-key": (TINY_DEFAULTS + 'learning_rate = 1.0\n[matrix]\nmodel = ["lstm"]\noptimizer = ["sgd"]\n', {},
                    "unknown key 'learning_rate'"),
    # Single-value axes override the [defaults] above.
    "zero-lr": (TINY_DEFAULTS + '[matrix]\nmodel = ["lstm"]\noptimizer = ["sgd"]\nlr = [0.0]\n', {}, "lr = 0.0"),
    "heads-vs-channels": (TINY_DEFAULTS + '[matrix]\nmodel = ["gpt1"]\noptimizer = ["sgd"]\nn_head = [3]\n', {},
                          "n_head"),
    "seq-too-long": (TINY_DEFAULTS + '[matrix]\nmodel = ["gpt2-tiny"]\noptimizer = ["sgd"]\nseq_len = [64]\n', {},
                     "context length"),
    "wrong-type": (TINY_DEFAULTS + '[matrix]\nmodel = ["lstm"]\noptimizer = ["sgd"]\nbatch_size = ["big"]\n', {},
                   "batch_size must be an integer"),
    "missing-data": ('[defaults]\nmodel = "lstm"\noptimizer = "sgd"\ndataset = "wikitext2"\ntokenizer = "byte"\n',
                     {"BENCH_OFFLINE": "1"}, "wikitext-2"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_exit_two_and_nothing_written(case, bench_cli, write_matrix, tmp_path):
    body, env, expected = BAD_INPUTS[case]
    if case == "missing-data":
        env = {**env, "BENCH_DATA_DIR": str(tmp_path / "empty"), "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    result = bench_cli("run", str(write_matrix(body, name=case)), env=env)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bench: error:"), result.stderr
    assert expected in lines[0]
    assert not (tmp_path / "outputs").exists()
