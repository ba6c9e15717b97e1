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
from bench.evaluation.cell_hellaswag import score_in_run
from bench.registry import Registry
from bench.store import CellRecord, ResultStore
from bench.evaluation.perplexity import format_ppl
from bench.training import Diverged, Halted, Interrupted, LoopState, is_out_of_memory, train_cell

TRACEBACK_FILE = "traceback.txt"


@dataclass
class RunOutcome:
    finished: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # cell name -> status
    interrupted: str | None = None  # the signal that stopped the run early, if one did


# A rerun skips cells whose summary holds one of these: their outcome is a property of the
# configuration (a sweep marks the trials it discards `pruned`). oom, error, interrupted and
# paused cells run again, resuming from their checkpoint.
FINAL_STATUSES = ("ok", "diverged", "pruned")


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
        if previous.get("status") in FINAL_STATUSES and not force:
            say(f"{prefix}: already {_done_word(previous)}, skipped (use --force to rerun)")
            outcome.skipped.append(cell.name)
            CheckpointStore(record.path / CHECKPOINT_DIR, cell.id).clear()  # left by a kill after the summary
            score_in_run(record, evaluation, registry=registry, device=device, say=say, prefix=prefix)
            continue
        if force:
            CheckpointStore(record.path / CHECKPOINT_DIR, cell.id).clear()
        (record.path / TRACEBACK_FILE).unlink(missing_ok=True)
        record.write_config(cell.as_dict())
        started = time.perf_counter()
        progress = LoopState()
        try:
            summary = _train_with_oom_retry(cell, registry, hooks, device, record, stop, progress,
                                            lambda line: say(f"{prefix}: {line.strip()}"))
        except (KeyboardInterrupt, SystemExit) as exc:
            if _is_real_signal(exc, stop):
                raise
            # A plugin's sys.exit() or a KeyboardInterrupt raised by cell code ends that cell only.
            status = _failure_summary(cell, record, exc, device, progress)
            say(f"{prefix}: error at step {status['step']}: {status['reason']} (see {record.path / TRACEBACK_FILE})")
            outcome.failed[cell.name] = status["status"]
            _notify_end(hooks, cell, status, say)
        except Halted as exc:
            status = _failure_summary(cell, record, exc, device, progress)
            say(f"{prefix}: paused at step {exc.step} (halt_at_step), val loss {exc.validation.get('val_loss')}")
            _notify_end(hooks, cell, status, say)
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
            say(f"{prefix}: val ppl {format_ppl(summary['best_val_ppl'])}, test ppl {format_ppl(summary['test_ppl'])} "
                f"({time.perf_counter() - started:.1f} s)")
            outcome.finished.append(cell.name)
            score_in_run(record, evaluation, registry=registry, device=device, say=say, prefix=prefix)
        # Outside the except block, so the exception's frames (and the tensors they hold) are gone.
        free_memory(device)
    return outcome


def _is_real_signal(exc: BaseException, stop: Any) -> bool:
    """Whether a KeyboardInterrupt/SystemExit came from the user (a second signal, or no signal
    handling at all) rather than from code running inside a cell."""
    if stop is None:
        return True
    return isinstance(exc, KeyboardInterrupt) and getattr(stop, "forced", False)


def _notify_end(hooks: Any, cell: Cell, summary: dict[str, Any], say: Callable[[str], None]) -> None:
    """``bench_run_end`` for a cell that did not finish; a logger failing here only gets a warning."""
    try:
        hooks.bench_run_end(cell=cell.as_dict(), summary=summary)
    except Exception as exc:  # noqa: BLE001 - a logger plugin must not end the matrix either
        say(f"warning: a bench_run_end hook failed for {cell.name}: {type(exc).__name__}: {exc}")


def _done_word(summary: dict[str, Any]) -> str:
    if summary.get("status") == "diverged":
        return f"diverged at step {summary.get('step')}"
    return "complete"


def _train_with_oom_retry(cell: Cell, registry: Registry, hooks: Any, device: torch.device, record: CellRecord,
                          stop: Any, progress: LoopState, say: Callable[[str], None]) -> dict[str, Any]:
    try:
        return train_cell(cell, registry, hooks, device, record, stop=stop, loop=progress, say=say)
    except Exception as exc:  # noqa: BLE001 - only out-of-memory is retried; the rest goes up as it is
        if not is_out_of_memory(exc) or not cell.config["oom_retry"] or cell.config["batch_size"] < 2:
            raise
        say(f"out of memory at step {progress.step} ({str(exc).splitlines()[0][:120]})")
    free_memory(device)
    batching = (cell.config["batch_size"] // 2, cell.config["grad_accum"] * 2)
    say(f"retrying once with batch_size {batching[0]} x grad_accum {batching[1]} (same effective batch)")
    return train_cell(cell, registry, hooks, device, record, stop=stop, loop=progress, batching=batching,
                      say=say)


def free_memory(device: torch.device) -> None:
    """Return what a finished or failed cell held, so the next cell starts with the whole device."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _classify(exc: BaseException, progress: LoopState) -> tuple[str, int]:
    """The status a cell that did not finish gets, and the step it reached."""
    if isinstance(exc, Interrupted):
        return "interrupted", exc.step
    if isinstance(exc, Halted):
        return "paused", exc.step
    if isinstance(exc, Diverged):
        return "diverged", exc.step
    if is_out_of_memory(exc):
        return "oom", progress.step
    return "error", progress.step


def _failure_summary(cell: Cell, record: CellRecord, exc: BaseException, device: torch.device,
                     progress: LoopState) -> dict[str, Any]:
    status, step = _classify(exc, progress)
    if status not in ("interrupted", "paused"):
        record.write_text(TRACEBACK_FILE, "".join(traceback.format_exception(exc)))
    summary = {**cell.as_dict(), "status": status, "step": step, "total_steps": progress.total_steps,
               "device": str(device), "reason": f"{type(exc).__name__}: {exc}".splitlines()[0][:300],
               "memory": progress.memory}
    if isinstance(exc, Halted):
        summary.update(exc.validation)
    record.write_summary(summary)
    return summary
