"""Run the cells of a matrix; a failing cell never stops the others.

:func:`run_cells` is the driver: it skips finished cells and hands the rest to an executor
(:mod:`bench.executors`; by default one after another in this process). :func:`run_cell` is the
body of one cell, the same function whichever process (driver, pool worker, Ray task) runs it.
"""

from __future__ import annotations

import gc
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from bench.budget import budget_record
from bench.cells import Cell
from bench.checkpoint import CHECKPOINT_DIR, CheckpointStore
from bench.eta import MatrixEta, steps_run
from bench.evaluation.cell_hellaswag import score_in_run
from bench.evaluation.perplexity import format_ppl
from bench.hooks import stderr_line  # noqa: F401 - also bench.runner's public name for it
from bench.provenance import stale_reason, stored_provenance
from bench.registry import Registry
from bench.selection import resolve_device
from bench.store import SETTLED_STATUSES, CellRecord, ResultStore
from bench.trackers import attach_trackers
from bench.training import Diverged, Halted, Interrupted, LoopState, is_out_of_memory, train_cell

TRACEBACK_FILE = "traceback.txt"


@dataclass
class RunOutcome:
    finished: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # cell name -> status
    interrupted: str | None = None  # the signal that stopped the run early, if one did
    results: list[CellOutcome] = field(default_factory=list)  # what the executor returned, one per cell it ran


# A rerun skips cells whose summary holds one of these (the store's settled statuses: ok,
# diverged, pruned), as their outcome is a property of the configuration. oom, error,
# interrupted and paused cells run again, resuming from their checkpoint.
FINAL_STATUSES = SETTLED_STATUSES


@dataclass(frozen=True)
class RunSpec:
    """Where and how cells run: plain data, so it travels to worker processes and Ray tasks."""

    outputs: str  # the results root; cells live in <outputs>/<matrix>/<cell-id>/
    matrix: str
    device: str  # "cpu", "cuda" or "auto" (resolved where the cell trains)
    force: bool = False
    evaluation: dict[str, Any] | None = None
    plugins: Any = None  # the driver's bench.registry.PluginSelection, so workers load the same plugins


@dataclass
class Session:
    """What only the driver process holds: live plugin objects, the stop flag, the run lock."""

    registry: Registry
    hooks: Any
    stop: Any = None  # a bench.signals.GracefulStop, or anything with .requested and .cause
    say: Callable[[str], None] = stderr_line
    lock: Any = None  # the bench.lock.MatrixLock held for the run; worker processes share it
    labels: dict[str, str] = field(default_factory=dict)  # cell id -> "[3/12] gpt1-L1-adam"
    eta: MatrixEta | None = None  # the matrix's time left, said after each settled cell

    def label(self, cell: Cell) -> str:
        return self.labels.get(cell.id, cell.name)

    def settled(self, outcome: CellOutcome) -> None:
        """Every executor calls this as each cell's outcome arrives (finished, failed or lost)."""
        line = self.eta.settled(outcome.id, steps_run(outcome.summary)) if self.eta else None
        if line and not outcome.stopped:
            self.say(line)


@dataclass
class CellOutcome:
    """One trained (or failed) cell, as an executor hands it back to the driver."""

    id: str
    name: str
    status: str  # the summary's status: ok, diverged, oom, error, interrupted, ...
    summary: dict[str, Any] | None = None
    stopped: bool = False  # ended by a stop request (the run stops) rather than by a fault


@dataclass
class CellContext:
    """Everything one cell's training needs, in the process that trains it."""

    registry: Registry
    hooks: Any
    store: ResultStore
    device: torch.device
    force: bool = False
    stop: Any = None
    evaluation: dict[str, Any] | None = None


def run_cells(cells: list[Cell], *, registry: Registry, hooks: Any, store: ResultStore,
              device: torch.device, force: bool = False, stop: Any = None,
              evaluation: dict[str, Any] | None = None, say: Callable[[str], None] = stderr_line,
              executor: Any = None, lock: Any = None, plugins: Any = None,
              labels: dict[str, str] | None = None, eta: bool = True) -> RunOutcome:
    """Skip finished cells, hand the rest to ``executor`` (default: one after another in this
    process). ``stop`` (a :class:`bench.signals.GracefulStop`) ends the run after the current
    step with the cell checkpointed; ``force`` retrains every cell from scratch. ``labels`` name
    cells in progress lines (default ``[i/N] name``); ``eta`` says the time left after each settled
    cell (a sweep, which calls this once per round, turns it off: its rounds are not the whole run)."""
    outcome = RunOutcome()
    if labels is None:
        labels = {c.id: f"[{i}/{len(cells)}] {c.name}" for i, c in enumerate(cells, start=1)}
    session = Session(registry, hooks, stop=stop, say=say, lock=lock, labels=labels)
    todo = []
    for cell in cells:
        record = store.cell(cell.id)
        previous = record.read_summary(verify_files=True) or {}
        stale = stale_reason(stored_provenance(previous, record.path), cell.provenance)
        if previous.get("status") in FINAL_STATUSES and not force and not stale:
            say(f"{session.label(cell)}: already {_done_word(previous)}, skipped (use --force to rerun)")
            outcome.skipped.append(cell.name)
            CheckpointStore(record.path / CHECKPOINT_DIR, cell.id).clear()  # left by a kill after the summary
            score_in_run(record, evaluation, registry=registry, device=device, say=say, prefix=session.label(cell))
        elif cell.problem:  # a plugin cannot build this cell; an earlier result of it is never overwritten
            outcome.failed[cell.name] = "error"
            _record_problem(cell, record, previous, say, session.label(cell))
        else:
            if stale:  # the stored state came from other code: start over
                say(f"{session.label(cell)}: stored result came from other plugin or library versions ({stale}); "
                    "training again")
                CheckpointStore(record.path / CHECKPOINT_DIR, cell.id).clear()
            if previous.get("status") in FINAL_STATUSES:  # stale or --force: kept until a new result settles
                store.set_aside(cell.id)
            todo.append(cell)
    spec = RunSpec(str(store.root), store.path.name, device.type, force, evaluation, plugins)
    session.eta = MatrixEta(todo) if eta else None
    results = executor.execute(todo, spec, session) if executor is not None else run_sequentially(todo, spec, session)
    outcome.results = results
    _settle_superseded(store, todo, results, session)
    for result in results:
        if result.stopped:
            outcome.interrupted = stop.cause if stop is not None and stop.requested else "a stop request"
        elif result.status == "ok":
            outcome.finished.append(result.name)
        elif result.status != "paused":  # paused (halt_at_step) is neither finished nor failed
            outcome.failed[result.name] = result.status
    if stop is not None and stop.requested and outcome.interrupted is None and len(results) < len(todo):
        outcome.interrupted = stop.cause
    return outcome


def _settle_superseded(store: ResultStore, cells: list[Cell], results: list[CellOutcome], session: Session) -> None:
    """A set-aside result goes once its cell has a settled result again, comes back when a stop
    came before the cell started, and otherwise stays where the lines printed here say."""
    status = {result.id: result.status for result in results}
    for cell in cells:
        aside = store.superseded(cell.id)
        if not aside.exists():
            continue
        if status.get(cell.id) in FINAL_STATUSES:
            store.drop_superseded(cell.id)
        elif not store.cell(cell.id).path.exists():
            store.restore(cell.id)
        else:
            session.say(f"{session.label(cell)}: its earlier result is kept in {aside} until the cell finishes again")


def run_sequentially(cells: list[Cell], spec: RunSpec, session: Session) -> list[CellOutcome]:
    """The plain executor: each cell in turn, in this process, with the driver's own plugins."""
    context = CellContext(session.registry, session.hooks, ResultStore(spec.outputs, spec.matrix),
                          resolve_device(spec.device), spec.force, session.stop, spec.evaluation)
    outcomes = []
    for cell in cells:
        if session.stop is not None and session.stop.requested:
            break
        outcomes.append(run_cell(cell, context, session.label(cell), session.say))
        session.settled(outcomes[-1])
        if outcomes[-1].stopped:
            break
    return outcomes


def run_cell(cell: Cell, context: CellContext, label: str, out: Callable[[str], None] = stderr_line) -> CellOutcome:
    """Train one cell and record its outcome; never raises for the cell's own failure. This is
    the body every executor runs, in the driver or in a worker process. ``out`` gets whole
    lines, each starting with ``label``."""
    def say(line: str) -> None:
        out(f"{label}: {line}")

    record = context.store.cell(cell.id)
    device, stop = context.device, context.stop
    hooks = attach_trackers(context.hooks, cell.as_dict(), context.registry, context.store.path, say)
    if context.force:
        CheckpointStore(record.path / CHECKPOINT_DIR, cell.id).clear()
    (record.path / TRACEBACK_FILE).unlink(missing_ok=True)
    record.write_config(cell.as_dict())
    started = time.perf_counter()
    progress = LoopState()
    try:
        summary = _train_with_oom_retry(cell, context.registry, hooks, device, record, stop, progress,
                                        lambda line: say(line.strip()))
    except (KeyboardInterrupt, SystemExit) as exc:
        if _is_real_signal(exc, stop):
            raise
        # A plugin's sys.exit() or a KeyboardInterrupt raised by cell code ends that cell only.
        status = _failure_summary(cell, record, exc, device, progress)
        say(f"error at step {status['step']}: {status['reason']} (see {record.path / TRACEBACK_FILE})")
        _notify_end(hooks, cell, status, say)
        result = CellOutcome(cell.id, cell.name, "error", status)
    except Halted as exc:
        status = _failure_summary(cell, record, exc, device, progress)
        say(f"paused at step {exc.step} (halt_at_step), val loss {exc.validation.get('val_loss')}")
        _notify_end(hooks, cell, status, say)
        result = CellOutcome(cell.id, cell.name, "paused", status)
    except Interrupted as exc:
        summary = _failure_summary(cell, record, exc, device, progress)
        _notify_end(hooks, cell, summary, say)
        say(str(exc))
        result = CellOutcome(cell.id, cell.name, "interrupted", summary, stopped=True)
    except Exception as exc:  # noqa: BLE001 - one cell's failure must not end the matrix
        status = _failure_summary(cell, record, exc, device, progress)
        say(f"{status['status']} at step {status['step']}: {status['reason']} "
            f"(see {record.path / TRACEBACK_FILE})")
        if status["status"] in FINAL_STATUSES:  # a diverged cell will not resume: free the disk
            CheckpointStore(record.path / CHECKPOINT_DIR, cell.id).clear()
        _notify_end(hooks, cell, status, say)
        result = CellOutcome(cell.id, cell.name, status["status"], status)
    else:
        say(f"val ppl {format_ppl(summary['best_val_ppl'])}, test ppl {format_ppl(summary['test_ppl'])} "
            f"({time.perf_counter() - started:.1f} s)")
        if summary.get("impossible"):
            say(f"WARNING: {summary['impossible']}")
        score_in_run(record, context.evaluation, registry=context.registry, device=device,
                     say=out, prefix=label)
        result = CellOutcome(cell.id, cell.name, "ok", record.read_summary())
    hooks.close(result.status)
    # Outside the except block, so the exception's frames (and the tensors they hold) are gone.
    free_memory(device)
    return result


def lost_cell(cell: Cell, record: CellRecord, reason: str, step: int, total_steps: int, device: str,
              session: Session | None = None) -> CellOutcome:
    """A cell whose worker died under it (SIGKILL, OOM killer, a lost node): recorded as
    ``interrupted`` so the next run resumes it from its last checkpoint, unless the worker had
    already written a final summary, which is kept (its hooks saw that end). The dead worker's
    ``bench_run_end`` never came, so the driver's own hooks (``session``) get it here."""
    previous = record.read_summary() or {}
    if previous.get("status") in FINAL_STATUSES:
        return CellOutcome(cell.id, cell.name, previous["status"], previous)
    summary = {**cell.as_dict(), "status": "interrupted", "step": step, "total_steps": total_steps,
               "device": device, "reason": reason}
    record.write_config(cell.as_dict())  # a Ray task's folder never arrived: the cell still gets one
    record.write_summary(summary)
    if session is not None:
        _notify_end(session.hooks, cell, summary, lambda line: session.say(f"{session.label(cell)}: {line}"))
    return CellOutcome(cell.id, cell.name, "interrupted", summary)


def lost_line(died: str, outcome: CellOutcome) -> str:
    """What to say about a worker that died under a cell: its cell is to be resumed, unless the cell had
    already settled (the worker died between writing the summary and reporting it), then it stays counted."""
    if outcome.status == "interrupted":
        return (outcome.summary or {}).get("reason") or f"{died}; rerun to resume from its last checkpoint"
    return f"{died} after the cell had finished ({outcome.status}); its result is kept"


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


def _record_problem(cell: Cell, record: CellRecord, previous: dict[str, Any], say: Callable[[str], None],
                    prefix: str) -> None:
    if previous.get("status") in FINAL_STATUSES:
        say(f"{prefix}: cannot be built now, its earlier result is kept: {cell.problem}")
        return
    record.write_config(cell.as_dict())
    record.write_summary({**cell.as_dict(), "status": "error", "step": 0, "reason": cell.problem})
    say(f"{prefix}: error: {cell.problem}")


def all_finished(cells: list[Cell], store: ResultStore) -> bool:
    """Whether `bench run` would skip every one of ``cells`` (settled, intact, same plugin versions):
    checked without writing anything."""
    for cell in cells:
        record = store.cell(cell.id)
        summary = record.read_summary(verify_files=True) or {}
        if (cell.problem or summary.get("status") not in FINAL_STATUSES
                or stale_reason(stored_provenance(summary, record.path), cell.provenance)):
            return False
    return True


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
    if progress.plan is not None:  # what the cell spent counts, whatever ended it (a sweep's max_time/max_cost)
        train_time = progress.clocks["train"].elapsed
        used = budget_record(cell.config, progress.plan, step, train_time, None)["budget_used"]
        summary.update(train_time_s=train_time, budget_used=used)
    record.write_summary(summary)
    return summary
