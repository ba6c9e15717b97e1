"""The estimate of `bench estimate` next to what the cells actually took."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
from tabulate import tabulate

from bench.estimate import ESTIMATE_FILE, CellEstimate
from bench.report.render import Section

MB = 1e6


def estimate_table(estimates: list[CellEstimate], totals: dict[str, float]) -> str:
    rows = [[e.name, f"{e.params:,}", f"{e.flops_per_token:.3g}", f"{e.planned_steps:,}",
             f"{e.worst_step_ms:.1f} [{e.worst_step_index}]", f"{e.median_step_ms:.1f}", f"{e.spread:.2f}x",
             f"{e.hours:.3f}", f"{e.median_hours:.3f}", f"${e.cost:.2f}",
             f"{e.peak_memory_bytes / MB:.0f}" if e.peak_memory_bytes else "-",
             f"{e.checkpoint_bytes / MB:.1f}", f"{e.weights_bytes / MB:.1f}", e.measured_by or "itself"]
            for e in estimates]
    rows.append(["total", "", "", f"{int(totals['planned_steps']):,}", "", "", "", f"{totals['hours']:.3f}",
                 f"{totals['median_hours']:.3f}", f"${totals['cost']:.2f}", "", "", "", ""])
    return tabulate(rows, headers=["cell", "params", "FLOPs/token", "planned steps", "worst step 10-19 ms [step]",
                                   "median ms", "spread", "hours (worst)", "hours (median)", "cost (worst)",
                                   "peak mem MB", "checkpoint MB", "weights MB", "steps timed on"],
                    tablefmt="github", disable_numparse=True)


def read_estimate(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / ESTIMATE_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def estimate_vs_actual(folder: Path, summaries: list[dict[str, Any]]) -> Section | None:
    """Estimated against actual training hours and dollars for the cells both know."""
    estimate = read_estimate(folder)
    if not estimate:
        return None
    actual = {s["id"]: s for s in summaries}
    rows = []
    for cell in estimate["cells"]:
        summary = actual.get(cell["id"], {})
        hours = summary["train_time_s"] / 3600 if summary.get("train_time_s") is not None else None
        rows.append({"Cell": cell["name"], "Estimated hours": cell["hours"], "Actual hours": hours,
                     "Actual / estimate": hours / cell["hours"] if hours is not None and cell["hours"] else None,
                     "Estimated cost ($)": cell["cost"],
                     "Actual cost ($)": hours * estimate["cost_per_hour"] if hours is not None else None,
                     "Status": summary.get("status")})
    note = (f"Estimate: slowest of steps 10-19 over {estimate['steps']} measured steps on {estimate['device']}, "
            f"x planned steps, at ${estimate['cost_per_hour']:.2f}/hour; actual: training time (evaluation excluded).")
    return Section("estimate", "estimate vs actual", pd.DataFrame(rows), [note])
