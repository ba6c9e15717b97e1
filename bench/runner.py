"""Run every cell of a matrix in turn; a failing cell never stops the others."""

from __future__ import annotations

import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from bench.cells import Cell
from bench.errors import BenchError
from bench.registry import Registry
from bench.store import CellRecord, ResultStore
from bench.trainer import Diverged, train_cell

TRACEBACK_FILE = "traceback.txt"


@dataclass
class RunOutcome:
    finished: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # cell name -> status


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
    keeps cells whose name contains it."""
    if not expression:
        return cells
    if "=" not in expression:
        return [c for c in cells if expression in c.name]
    pairs = []
    for part in expression.split(","):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise BenchError(f"--filter {expression!r}: write key=value pairs separated by commas")
        pairs.append((key.strip(), value.strip()))
    return [c for c in cells if all(str(c.config.get(k)) == v for k, v in pairs)]


def run_cells(cells: list[Cell], *, registry: Registry, hooks: Any, store: ResultStore,
              device: torch.device, force: bool = False,
              say: Callable[[str], None] = lambda line: print(line, file=sys.stderr)) -> RunOutcome:
    outcome = RunOutcome()
    for position, cell in enumerate(cells, start=1):
        record = store.cell(cell.id)
        prefix = f"[{position}/{len(cells)}] {cell.name}"
        if record.is_complete and not force:
            say(f"{prefix}: already complete, skipped (use --force to rerun)")
            outcome.skipped.append(cell.name)
            continue
        record.write_config(cell.as_dict())
        started = time.perf_counter()
        try:
            summary = train_cell(cell, registry, hooks, device, record)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - one cell's failure must not end the matrix
            status = _failure_summary(cell, record, exc, device)
            say(f"{prefix}: {status['status']}: {status['reason']} (see {record.path / TRACEBACK_FILE})")
            outcome.failed[cell.name] = status["status"]
            if device.type == "cuda":
                torch.cuda.empty_cache()
            continue
        say(f"{prefix}: val ppl {summary['best_val_ppl']:.2f}, test ppl {summary['test_ppl']:.2f} "
            f"({time.perf_counter() - started:.1f} s)")
        outcome.finished.append(cell.name)
    return outcome


def _failure_summary(cell: Cell, record: CellRecord, exc: BaseException, device: torch.device) -> dict[str, Any]:
    if isinstance(exc, Diverged):
        status, step = "diverged", exc.step
    elif isinstance(exc, torch.OutOfMemoryError):
        status, step = "oom", None
    else:
        status, step = "error", None
    record.write_text(TRACEBACK_FILE, "".join(traceback.format_exception(exc)))
    summary = {**cell.as_dict(), "status": status, "step": step, "device": str(device),
               "reason": f"{type(exc).__name__}: {exc}".splitlines()[0][:300]}
    record.write_summary(summary)
    return summary
