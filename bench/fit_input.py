"""Result tables from outside bench (a CSV or JSON file of training runs) for `bench fit --from`.

This is the other reader beside ``bench.store``: the store reads bench's own cell folders, this
reads someone else's table of runs, and both hand the fits plain frames. Two layouts work with no
options: the CS336 assignment-3 JSON (a list of ``{"parameters", "compute_budget", "final_loss"}``
records, tokens implied by C = 6 N D) and the open-athena isoflop-experiments CSV (columns
``params, tokens, loss, experiment`` and optionally ``budget``; the budget, when absent, is
6 N D, grouped into budgets the way bench groups cells without ``max_flops``). Any other layout
names its columns with options. Bad files raise one BenchError line; nothing is written.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.analysis.scaling import BUDGET_SPREAD, group_budgets
from bench.errors import BenchError

# Column names tried, in order, when an option does not name one.
DEFAULT_COLUMNS: dict[str, tuple[str, ...]] = {
    "params": ("parameters", "params", "N"),
    "tokens": ("tokens", "D"),
    "budget": ("compute_budget", "budget", "flops", "C"),
    "loss": ("final_loss", "loss"),
}
GROUP_COLUMN = "experiment"  # the open-athena layout stacks several IsoFLOP studies in one file


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a .csv file or a .json list of objects, as dicts."""
    path = Path(path)
    if not path.is_file():
        raise BenchError(f"--from {path}: no such file; give a .csv or .json file of training runs")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            with path.open(newline="", encoding="utf-8") as handle:
                rows: Any = list(csv.DictReader(handle))
        elif suffix == ".json":
            rows = json.loads(path.read_text(encoding="utf-8"))
        else:
            raise BenchError(f"--from {path}: unknown file type {suffix or '(none)'}; give a .csv or .json file")
    except (json.JSONDecodeError, UnicodeDecodeError, csv.Error) as exc:
        raise BenchError(f"--from {path}: not readable as {suffix[1:].upper()} ({exc}); "
                         "fix or re-export the file") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise BenchError(f"--from {path}: expected a JSON list of objects, one per run, e.g. "
                         '[{"parameters": 1e8, "compute_budget": 1e18, "final_loss": 3.2}, ...]')
    if not rows:
        raise BenchError(f"--from {path}: the file holds no runs")
    return rows


def column(rows: list[dict[str, Any]], role: str, named: str | None, source: str, required: bool = True) -> str | None:
    """The column playing ``role``: the one named by its option, else the first default present."""
    present = set().union(*(r.keys() for r in rows))
    if named:
        if named not in present:
            raise BenchError(f"--from {source}: no column {named!r}; the file has {', '.join(sorted(present))}")
        return named
    for candidate in DEFAULT_COLUMNS[role]:
        if candidate in present:
            return candidate
    if required:
        raise BenchError(f"--from {source}: no {role} column (tried {', '.join(DEFAULT_COLUMNS[role])}); name it "
                         f"with --{role}-column; the file has {', '.join(sorted(present))}")
    return None


def numbers(rows: list[dict[str, Any]], name: str, source: str, positive: bool = True) -> np.ndarray:
    """A column as floats; the first bad value is named with its row."""
    values = np.empty(len(rows))
    for i, row in enumerate(rows):
        raw = row.get(name)
        try:
            value = float(raw)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            value = math.nan
        if not math.isfinite(value) or (positive and value <= 0):
            raise BenchError(f"--from {source}: row {i + 1} has {name} = {raw!r}; every run needs a "
                             f"{'positive ' if positive else ''}number there (drop or fix the row)")
        values[i] = value
    return values


def single_experiment(rows: list[dict[str, Any]], source: str) -> None:
    """Refuse to fit one law through several stacked studies."""
    names = sorted({str(r[GROUP_COLUMN]) for r in rows if r.get(GROUP_COLUMN) not in (None, "")})
    if len(names) > 1:
        shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
        raise BenchError(f"--from {source}: the file holds {len(names)} experiments ({shown}) and one fit needs one; "
                         f"pick one with --where {GROUP_COLUMN}={names[0]}")


def isoflop_frame(rows: list[dict[str, Any]], source: str,
                  columns: dict[str, str | None]) -> tuple[pd.DataFrame, str]:
    """The frame ``isoflop_fit`` takes (budget, n, d, loss, name) and a sentence saying where each came from."""
    single_experiment(rows, source)
    n_col = column(rows, "params", columns.get("params"), source)
    loss_col = column(rows, "loss", columns.get("loss"), source)
    d_col = column(rows, "tokens", columns.get("tokens"), source, required=False)
    c_col = column(rows, "budget", columns.get("budget"), source, required=d_col is None)
    n, loss = numbers(rows, n_col, source), numbers(rows, loss_col, source)  # type: ignore[arg-type]
    if c_col is not None:
        budget = numbers(rows, c_col, source)
        d = numbers(rows, d_col, source) if d_col else budget / (6 * n)
        how = f"budget C = column {c_col}"
    else:
        d = numbers(rows, d_col, source)  # type: ignore[arg-type]
        budget = group_budgets(6 * n * d)
        how = (f"budget C = 6 N D, runs within {BUDGET_SPREAD:g}x of each other sharing a budget labelled by the "
               f"largest (no budget column)")
    names = [str(r.get("name") or r.get("model") or i + 1) for i, r in enumerate(rows)]
    frame = pd.DataFrame({"budget": budget, "n": n, "d": d, "loss": loss, "name": names})
    tokens = f"column {d_col}" if d_col else "C / (6 N) (no tokens column)"
    return frame, f"N = column {n_col}, D = {tokens}, loss = column {loss_col}; {how}"


def hparam_frame(rows: list[dict[str, Any]], source: str, x: str, y: str, loss: str | None) -> pd.DataFrame:
    """The frame ``fit_hparam`` takes: columns x, y and loss, named as in the file."""
    single_experiment(rows, source)
    for name in (x, y):
        column(rows, "loss", name, source)  # present, or one line naming the columns there are
    loss_col = column(rows, "loss", loss, source)
    return pd.DataFrame({x: numbers(rows, x, source), y: numbers(rows, y, source),
                         "loss": numbers(rows, loss_col, source)})  # type: ignore[arg-type]
