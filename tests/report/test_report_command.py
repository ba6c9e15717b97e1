"""`bench report` and `bench plot` end to end: a real run, then the commands as a user types them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest

from bench.cli import main
from tests.conftest import TINY_DEFAULTS

GRID = TINY_DEFAULTS + """
[matrix]
model = ["lstm", "gpt1"]
optimizer = ["adamw"]
n_layer = [1]
"""
HEADINGS = ("tiny: perplexity", "tiny: time", "tiny: memory", "tiny: mean per optimizer",
            "tiny: mean per architecture", "tiny: parameters and FLOPs")


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """One real `bench run` (a subprocess, as a user runs it) shared by every test here."""
    root = tmp_path_factory.mktemp("report-command")
    matrix = root / "tiny.toml"
    matrix.write_text(textwrap.dedent(GRID))
    run = subprocess.run([sys.executable, "-m", "bench.cli", "run", str(matrix), "--outputs", str(root / "out")],
                         capture_output=True, text=True, timeout=300, env={**os.environ, "MPLBACKEND": "Agg"})
    assert run.returncode == 0, run.stderr
    return root / "out"


@pytest.fixture
def bench(outputs, capsys):
    """The CLI in this process (no interpreter start per call), with the shared results."""
    def call(*args: str) -> SimpleNamespace:
        code = main([*args, "--outputs", str(outputs)])
        captured = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=captured.out, stderr=captured.err)
    return call


def _sections(text: str) -> dict[str, list[str]]:
    """Table rows (not header or rule) under each '## ' heading of github output."""
    sections, current = {}, None
    for line in text.splitlines():
        if line.startswith("## "):
            current = sections.setdefault(line[3:], [])
        elif current is not None and line.startswith("|") and not line.startswith("|-"):
            current.append(line)
    return {k: rows[1:] for k, rows in sections.items()}  # drop each header row


def test_report_prints_every_table_non_empty_and_plot_writes_pngs(bench, tmp_path):
    report = bench("report", "--sort", "time", "--format", "github")
    assert report.returncode == 0, report.stderr
    sections = _sections(report.stdout)
    for heading in HEADINGS:
        title = next(k for k in sections if k.startswith(heading))
        assert sections[title], f"{heading} has no rows"
    assert "nan" not in report.stdout.lower()
    memory_rows = sections["tiny: memory"]
    assert all("process RSS" in row for row in memory_rows)

    plot = bench("plot", "--out", str(tmp_path / "pngs"))
    assert plot.returncode == 0, plot.stderr
    pngs = sorted((tmp_path / "pngs" / "tiny").glob("*.png"))
    assert [p.name for p in pngs] == ["all_cells_val_ppl.png", "gpt1-L1-adamw.png", "lstm-L1-adamw.png"]


def test_the_terminal_default_has_no_markdown(bench):
    report = bench("report", "--tables", "perplexity")
    assert report.returncode == 0, report.stderr
    assert "**" not in report.stdout and "|" not in report.stdout and "## " not in report.stdout
    heading = next(line for line in report.stdout.splitlines() if line.startswith("tiny: perplexity"))
    assert "* in text" in heading
    assert any(line.split()[0].endswith("*") or " * " in line for line in report.stdout.splitlines()[3:])


def test_report_json_where_and_tables(bench):
    result = bench("report", "--format", "json", "--where", "model=gpt1", "--tables", "perplexity,memory")
    assert result.returncode == 0, result.stderr
    matrix = json.loads(result.stdout)["matrices"]["tiny"]
    assert set(matrix) == {"perplexity", "memory"}
    assert [row["Architecture"] for row in matrix["perplexity"]["rows"]] == ["gpt1"]
    assert matrix["memory"]["rows"][0]["Samples"] >= 2


@pytest.mark.parametrize("args, message", [
    (("--where", "optimiser=adamw"), "did you mean optimizer"),
    (("--where", "model=transformer"), "matches no cell"),
    (("--format", "xlsx"), "unknown format"),
    (("--sort", "speed"), "unknown sort key"),
    (("--peak-tflops", "-1"), "must be > 0"),
])
def test_report_user_errors_are_one_line_and_exit_2(bench, args, message):
    result = bench("report", *args)
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_report_and_plot_without_results_say_what_to_do(tmp_path, capsys):
    for command in ("report", "plot"):
        assert main([command, "--outputs", str(tmp_path / "empty")]) == 2
        assert "bench run" in capsys.readouterr().err


def test_report_can_write_plots_too(bench, tmp_path):
    result = bench("report", "--tables", "time", "--plots", str(tmp_path / "figs"))
    assert result.returncode == 0, result.stderr
    assert len(list((tmp_path / "figs" / "tiny").glob("*.png"))) == 3
    assert "3 plots" in result.stderr
