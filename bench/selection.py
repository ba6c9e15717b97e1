"""What the command line selects: the cells named by ``--filter`` and the device named by ``--device``."""

from __future__ import annotations

import torch

from bench.cells import Cell
from bench.errors import BenchError
from bench.matrix import closest


def resolve_device(choice: str) -> torch.device:
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise BenchError("--device cuda was asked for but torch sees no CUDA device; use --device cpu or auto")
    if choice not in ("cpu", "cuda"):
        raise BenchError(f"unknown device {choice!r}; use auto, cpu or cuda")
    return torch.device(choice)


def select_cells(cells: list[Cell], expression: str | None) -> list[Cell]:
    """``key=value[,key=value...]`` keeps cells whose config matches all pairs; any other text
    keeps cells whose name contains it. Selecting nothing is an error that says why."""
    if not expression:
        return cells
    if "=" not in expression:
        chosen = [c for c in cells if expression in c.name]
        if not chosen:
            raise BenchError(f"--filter {expression!r} matches none of the matrix's cells; names look like "
                             f"{cells[0].name!r}, or filter by key=value")
        return chosen
    pairs = _pairs(expression)
    keys = {key for cell in cells for key in cell.config}
    for key, _ in pairs:
        if key not in keys:
            raise BenchError(f"--filter {expression!r}: no cell has a key {key!r}{closest(key, sorted(keys))}")
    chosen = [c for c in cells if all(str(c.config.get(k)) == v for k, v in pairs)]
    if not chosen:
        raise BenchError(f"--filter {expression!r} matches none of the matrix's cells{_hint(cells, pairs)}")
    return chosen


def _pairs(expression: str) -> list[tuple[str, str]]:
    pairs = []
    for part in expression.split(","):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise BenchError(f"--filter {expression!r}: write key=value pairs separated by commas")
        pairs.append((key.strip(), value.strip()))
    return pairs


def _hint(cells: list[Cell], pairs: list[tuple[str, str]]) -> str:
    """The values a key takes, for the first pair whose value no cell has."""
    for key, value in pairs:
        taken = sorted({str(c.config.get(key)) for c in cells})
        if value not in taken:
            return f"; {key} is one of {', '.join(taken)}{closest(value, taken)}"
    return "; each pair matches some cells, but no cell matches them all"
