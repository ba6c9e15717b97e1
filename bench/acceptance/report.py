"""The acceptance report: a markdown page from the environment and the verdicts."""

from __future__ import annotations

from collections import Counter
from typing import Any

from bench.acceptance.rules import Verdict

ENVIRONMENT_FIELDS = (
    ("device", "Device"), ("driver", "NVIDIA driver"), ("torch", "torch"), ("cuda", "CUDA (torch build)"),
    ("cudnn", "cuDNN"), ("gpus", "GPUs visible"), ("host", "Host"), ("date", "Date (UTC)"),
    ("wall_s", "Wall time (s)"), ("budget_s", "Time budget (s)"),
)
MARK = {"pass": "PASS", "fail": "FAIL", "skip": "SKIP"}


def _cell(text: str) -> str:
    """Table-safe text: pipes escaped, newlines folded."""
    return " ".join(str(text).split()).replace("|", "\\|")


def summary_line(verdicts: list[Verdict]) -> str:
    counts = Counter(v.outcome for v in verdicts)
    return f"{counts['pass']} passed, {counts['fail']} failed, {counts['skip']} skipped of {len(verdicts)} checks"


def render_report(environment: dict[str, Any], verdicts: list[Verdict], *, dry_run: bool = False,
                  notes: list[str] | None = None) -> str:
    """The whole report as markdown: header, environment, one table row per check (with the seconds
    its measurement took), then notes and per-check details (a per-cell table)."""
    title = "GPU acceptance report" + (" (CPU dry run: tiny sizes, not an acceptance result)" if dry_run else "")
    lines = [f"# {title}", "", f"**{summary_line(verdicts)}.**", "", "## Environment", ""]
    lines += ["| | |", "|---|---|"]
    for key, label in ENVIRONMENT_FIELDS:
        value = environment.get(key)
        lines.append(f"| {label} | {_cell('n/a' if value is None else value)} |")
    lines += ["", "## Checks", "", "| # | check | result | measured | rule | s |", "|---|---|---|---|---|---|"]
    for v in verdicts:
        measured = v.measured + (f" — {v.note}" if v.note else "")
        seconds = "" if v.seconds is None else f"{v.seconds:g}"
        lines.append(f"| {v.number} | {_cell(v.title)} | {MARK.get(v.outcome, v.outcome)} | {_cell(measured)} | "
                     f"{_cell(v.rule)} | {seconds} |")
    if notes:
        lines += ["", "## Notes", ""] + [f"- {_cell(note)}" for note in notes]
    for v in verdicts:
        if v.details:
            lines += ["", f"## {v.number}. {v.title}", "", *v.details]
    return "\n".join(lines) + "\n"
