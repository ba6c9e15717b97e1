"""The acceptance report's markdown: header, environment, one row per check, notes and details."""

from __future__ import annotations

from bench.acceptance.report import render_report, summary_line
from bench.acceptance.rules import Verdict

ENV = {"device": "NVIDIA H200", "driver": "570.86.15", "torch": "2.13.0+cu128", "cuda": "12.8", "cudnn": 91000,
       "gpus": 1, "host": "node-7", "date": "2026-12-03 12:00", "wall_s": 431.5, "budget_s": 470}


def verdicts() -> list[Verdict]:
    return [
        Verdict(1, "nvml_identity", "NVML identity", "pass", "torch GPU-1, NVML GPU-1", "UUIDs equal", seconds=7.5),
        Verdict(6, "tf32", "TF32", "fail", "1.5x | slower than 2x", "speed-up >= 2x", note="a warning"),
        Verdict(14, "hw3", "hw3 matrix", "skip", "time guard: 3 s left", "all 12 cells ok",
                details=("| cell | status |", "|---|---|", "| lstm | ok |")),
    ]


def test_report_has_environment_rows_and_one_line_per_check():
    text = render_report(ENV, verdicts())
    lines = text.splitlines()
    assert lines[0] == "# GPU acceptance report"
    assert "**1 passed, 1 failed, 1 skipped of 3 checks.**" in lines
    for expected in ("| Device | NVIDIA H200 |", "| NVIDIA driver | 570.86.15 |", "| torch | 2.13.0+cu128 |",
                     "| CUDA (torch build) | 12.8 |", "| Wall time (s) | 431.5 |"):
        assert expected in lines
    rows = [line for line in lines if line.startswith(("| 1 |", "| 6 |", "| 14 |"))]
    assert len(rows) == 3
    assert rows[0] == "| 1 | NVML identity | PASS | torch GPU-1, NVML GPU-1 | UUIDs equal | 7.5 |"
    # The measured figures and the note share a cell; a pipe inside text cannot break the table.
    assert rows[1] == "| 6 | TF32 | FAIL | 1.5x \\| slower than 2x — a warning | speed-up >= 2x |  |"
    assert rows[2].startswith("| 14 | hw3 matrix | SKIP | time guard")


def test_details_follow_the_table_and_missing_environment_reads_na():
    text = render_report({"torch": "2.13.0"}, verdicts(), notes=["no | GPU"])
    assert "| Device | n/a |" in text
    assert "## Notes\n\n- no \\| GPU" in text
    details = text.split("## 14. hw3 matrix\n\n")[1]
    assert details.splitlines()[:3] == ["| cell | status |", "|---|---|", "| lstm | ok |"]


def test_dry_run_says_so_in_the_title():
    first = render_report(ENV, verdicts(), dry_run=True).splitlines()[0]
    assert "CPU dry run" in first and "not an acceptance result" in first


def test_summary_line_counts_outcomes():
    assert summary_line(verdicts()) == "1 passed, 1 failed, 1 skipped of 3 checks"
