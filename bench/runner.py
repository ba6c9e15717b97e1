"""Run every cell of a matrix in turn; a failing cell never stops the others."""

from __future__ import annotations

import gc
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from bench.cells import Cell
from bench.checkpoint import CHECKPOINT_DIR, CheckpointStore
from bench.errors import BenchError
from bench.evaluation.cell_hellaswag import score_in_run
from bench.provenance import stale_reason, stored_provenance
from bench.registry import Registry
from bench.store import CellRecord, ResultStore
from bench.trainer import Diverged, Interrupted, Progress, train_cell

TRACEBACK_FILE = "traceback.txt"


@dataclass
class RunOutcome:
    finished: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # cell name -> status
    interrupted: str | None = None  # the signal that stopped the run early, if one did


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


# A rerun skips cells whose summary holds one of these: their outcome is a property of the
# configuration. oom, error and interrupted cells run again, resuming from their checkpoint.
FINAL_STATUSES = ("ok", "diverged")


def run_cells(cells: list[Cell], *, registry: Registry, hooks: Any, store: ResultStore,
              device: torch.device, force: bool = False, stop: Any = None,
              evaluation: dict[str, Any] | None = None,
              say: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True)) -> RunOutcome:
    """Train each cell in turn. ``stop`` (a :class:`bench.signals.GracefulStop`) ends the run after
    the current step with the cell checkpointed; ``force`` retrains every cell from scratch."""
    outcome = RunOutcome()
    for position, cell in enumerate(cells, start=1):
        if stop is not None and stop.requested:
            outcome.interrupted = stop.cause
            break
        record = store.cell(cell.id)
        prefix = f"[{position}/{len(cells)}] {cell.name}"
        previous = record.read_summary() or {}
        stale = stale_reason(stored_provenance(previous, record.path), cell.provenance)
        if previous.get("status") in FINAL_STATUSES and not force and not stale:
            say(f"{prefix}: already {_done_word(previous)}, skipped (use --force to rerun)")
            outcome.skipped.append(cell.name)
            CheckpointStore(record.path / CHECKPOINT_DIR, cell.id).clear()  # left by a kill after the summary
            score_in_run(record, evaluation, registry=registry, device=device, say=say, prefix=prefix)
            continue
        if cell.problem:  # a plugin cannot build this cell; an earlier result of it is never overwritten
            outcome.failed[cell.name] = "error"
            _record_problem(cell, record, previous, say, prefix)
            continue
        if stale:
            say(f"{prefix}: stored result came from other plugin versions ({stale}); training again")
        if force or stale:
            CheckpointStore(record.path / CHECKPOINT_DIR, cell.id).clear()
        (record.path / TRACEBACK_FILE).unlink(missing_ok=True)
        record.write_config(cell.as_dict())
        started = time.perf_counter()
        progress = Progress()
        try:
            summary = _train_with_oom_retry(cell, registry, hooks, device, record, stop, progress,
                                            lambda line: say(f"{prefix}: {line.strip()}"))
        except KeyboardInterrupt:
            raise
        except Interrupted as exc:
            _notify_end(hooks, cell, _failure_summary(cell, record, exc, device, progress), say)
            say(f"{prefix}: {exc}")
            outcome.interrupted = stop.cause if stop is not None else "a stop request"
            break
        except Exception as exc:  # noqa: BLE001 - one cell's failure must not end the matrix
            status = _failure_summary(cell, record, exc, device, progress)
            say(f"{prefix}: {status['status']} at step {status['step']}: {status['reason']} "
                f"(see {record.path / TRACEBACK_FILE})")
            outcome.failed[cell.name] = status["status"]
            if status["status"] in FINAL_STATUSES:  # a diverged cell will not resume: free the disk
                CheckpointStore(record.path / CHECKPOINT_DIR, cell.id).clear()
            _notify_end(hooks, cell, status, say)
        else:
            say(f"{prefix}: val ppl {summary['best_val_ppl']:.2f}, test ppl {summary['test_ppl']:.2f} "
                f"({time.perf_counter() - started:.1f} s)")
            outcome.finished.append(cell.name)
            score_in_run(record, evaluation, registry=registry, device=device, say=say, prefix=prefix)
        # Outside the except block, so the exception's frames (and the tensors they hold) are gone.
        free_memory(device)
    return outcome


def _notify_end(hooks: Any, cell: Cell, summary: dict[str, Any], say: Callable[[str], None]) -> None:
    """``bench_run_end`` for a cell that did not finish; a logger failing here only gets a warning."""
    try:
        hooks.bench_run_end(cell=cell.as_dict(), summary=summary)
    except Exception as exc:  # noqa: BLE001 - a logger plugin must not end the matrix either
        say(f"warning: a bench_run_end hook failed for {cell.name}: {type(exc).__name__}: {exc}")


def _record_problem(cell: Cell, record: CellRecord, previous: dict[str, Any], say: Callable[[str], None],
                    prefix: str) -> None:
    if previous.get("status") in FINAL_STATUSES:
        say(f"{prefix}: cannot be built now, its earlier result is kept: {cell.problem}")
        return
    record.write_config(cell.as_dict())
    record.write_summary({**cell.as_dict(), "status": "error", "step": 0, "reason": cell.problem})
    say(f"{prefix}: error: {cell.problem}")


def _done_word(summary: dict[str, Any]) -> str:
    if summary.get("status") == "diverged":
        return f"diverged at step {summary.get('step')}"
    return "complete"


def _train_with_oom_retry(cell: Cell, registry: Registry, hooks: Any, device: torch.device, record: CellRecord,
                          stop: Any, progress: Progress, say: Callable[[str], None]) -> dict[str, Any]:
    try:
        return train_cell(cell, registry, hooks, device, record, stop=stop, progress=progress, say=say)
    except torch.OutOfMemoryError as exc:
        if not cell.config["oom_retry"] or cell.config["batch_size"] < 2:
            raise
        say(f"out of memory at step {progress.step} ({str(exc).splitlines()[0][:120]})")
    free_memory(device)
    batching = (cell.config["batch_size"] // 2, cell.config["grad_accum"] * 2)
    say(f"retrying once with batch_size {batching[0]} x grad_accum {batching[1]} (same effective batch)")
    return train_cell(cell, registry, hooks, device, record, stop=stop, progress=progress, batching=batching,
                      say=say)


def free_memory(device: torch.device) -> None:
    """Return what a finished or failed cell held, so the next cell starts with the whole device."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _failure_summary(cell: Cell, record: CellRecord, exc: BaseException, device: torch.device,
                     progress: Progress) -> dict[str, Any]:
    if isinstance(exc, Interrupted):
        status, step = "interrupted", exc.step
    elif isinstance(exc, Diverged):
        status, step = "diverged", exc.step
    elif isinstance(exc, torch.OutOfMemoryError):
        status, step = "oom", progress.step
    else:
        status, step = "error", progress.step
    if status != "interrupted":
        record.write_text(TRACEBACK_FILE, "".join(traceback.format_exception(exc)))
    summary = {**cell.as_dict(), "status": status, "step": step, "total_steps": progress.total_steps,
               "device": str(device), "reason": f"{type(exc).__name__}: {exc}".splitlines()[0][:300],
               "memory": progress.memory}
    record.write_summary(summary)
    return summary
