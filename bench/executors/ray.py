"""The ``ray`` executor: each cell one Ray task, on a cluster (``address``) or a local one.

Resources: each task asks for ``num_cpus`` CPUs (and trains with that many torch threads, or
``threads`` when set, see :mod:`bench.executors.threads`) and,
on GPU, ``num_gpus`` GPUs (``-1``: one per cell when the run's device is CUDA, none otherwise;
Ray sets ``CUDA_VISIBLE_DEVICES`` for the task). ``jobs`` caps the tasks in flight (0: as many as
the cluster's resources allow).

No shared filesystem is assumed. The driver ships the cell's folder (its checkpoints included)
with the task; the task trains in a private scratch folder and returns the folder; the driver
writes it into ``outputs/``. So a cell interrupted on one node resumes on any other. A worker
or node lost under a task makes Ray run it again (``retries`` times) from the state the driver
shipped; past that, the cell is recorded ``interrupted`` and the next run resumes it from the
driver's copy. A stop request (Ctrl-C, SIGTERM) reaches running tasks through a small actor:
each checkpoints, returns its folder, and the driver keeps it. Tasks still queued are cancelled
(and one that starts anyway is refused by the actor), so their cells stay as they were.
"""

from __future__ import annotations

import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.cells import Cell
from bench.errors import BenchError
from bench.executors.threads import check_threads
from bench.executors.transfer import pack_folder, unpack_into
from bench.runner import CellContext, CellOutcome, RunSpec, Session, lost_cell, lost_line, run_cell
from bench.selection import resolve_device
from bench.signals import STOP_SIGNALS
from bench.store import ResultStore

POLL_S = 0.5


def import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise BenchError(f"--executor ray needs Ray ({exc}); install it with "
                         f"pip install 'bench-lm[ray]' (or pip install ray)") from None
    return ray


class StopFlag:
    """A Ray actor (one per run) that running tasks poll for the driver's stop request. Its calls
    run one at a time, so a task either began before the stop (and checkpoints) or is refused."""

    def __init__(self) -> None:
        self.cause: str | None = None
        self.begun: set[str] = set()

    def set(self, cause: str) -> list[str]:
        """Stop; returns the cells whose tasks began training (the driver cancels the others)."""
        self.cause = cause
        return sorted(self.begun)

    def begin(self, cell_id: str) -> str | None:
        """A task about to train: the stop's cause if the run is stopping (then it must not), else None."""
        if self.cause is None:
            self.begun.add(cell_id)
        return self.cause

    def get(self) -> str | None:
        return self.cause


class RemoteStop:
    """In a task: ``requested`` turns true once the driver asks to stop (polled every second, so
    the trainer's per-step check stays a plain attribute read)."""

    def __init__(self, flag: Any, interval_s: float = 1.0):
        self.flag, self.interval_s = flag, interval_s
        self.cause: str = "nothing"
        self.requested = False
        self.forced = False  # no second signal reaches a task: a KeyboardInterrupt there is the cell's own
        self._done = threading.Event()
        threading.Thread(target=self._poll, name="bench-stop-poll", daemon=True).start()

    def _poll(self) -> None:
        import ray
        while not self._done.wait(self.interval_s):
            try:
                cause = ray.get(self.flag.get.remote())
            except Exception:  # noqa: BLE001 - a vanished driver: the task's result has nowhere to go anyway
                return
            if cause:
                self.cause, self.requested = cause, True
                return

    def close(self) -> None:
        self._done.set()


def train_remotely(cell: Cell, label: str, spec: RunSpec, files: dict[str, bytes], threads: int,
                   flag: Any) -> tuple[CellOutcome, dict[str, bytes], list[str], float] | None:
    """The task body, on whichever node Ray picked: the cell trains in a private scratch folder.
    Returns the outcome, the folder's files, the cell's output lines and the seconds ``run_cell`` took;
    None when the run was stopped before this task began (the cell is left as it was)."""
    import ray

    if ray.get(flag.begin.remote(cell.id)):  # first: a task the stop kept from starting costs nothing
        return None
    import torch

    from bench.registry import load_plugins

    torch.set_num_threads(max(1, threads))
    stop, lines = RemoteStop(flag), list[str]()
    # The driver already reported plugins that fail to load; failing hooks are reported from here.
    plugins = load_plugins(spec.plugins, warn=lambda line: None, hook_warn=lines.append)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-ray-") as scratch:
            store = ResultStore(scratch, spec.matrix)
            folder = store.cell(cell.id).path
            unpack_into(folder, files)
            context = CellContext(plugins.registry, plugins.hooks, store, resolve_device(spec.device),
                                  spec.force, stop, spec.evaluation)
            started = time.perf_counter()
            outcome = run_cell(cell, context, label, lines.append)
            return outcome, pack_folder(folder), lines, time.perf_counter() - started
    finally:
        stop.close()


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:300]


def _local_start_failed(exc: BaseException) -> str:
    """One line for a local Ray cluster that did not start: the cause, and the usual fix for it."""
    cause = f"{type(exc).__name__}: {_first_line(exc)}"
    if isinstance(exc, OSError) and exc.filename:
        fix = (f"Ray keeps its session files under $RAY_TMPDIR (default /tmp/ray): point RAY_TMPDIR at a writable "
               f"folder with free space ({exc.filename!r} is not one)")
    elif isinstance(exc, OSError):
        fix = "check free space and the open-file limit (ulimit -n) of this machine, and RAY_TMPDIR"
    else:
        fix = "`ray start --head` shows Ray's own log; or run without --executor ray (local worker processes)"
    return f"cannot start a local Ray cluster ({cause}); {fix}"


class RayExecutor:
    name = "ray"

    def __init__(self, address: str = "", jobs: int = 0, num_cpus: float = 1.0, num_gpus: float = -1.0,
                 retries: int = 1, threads: int = 0):
        if jobs < 0 or num_cpus <= 0 or retries < 0 or (num_gpus < 0 and num_gpus != -1):
            raise ValueError("needs jobs >= 0, num_cpus > 0, retries >= 0 and num_gpus >= 0 (or -1: automatic)")
        self.address, self.jobs, self.num_cpus, self.num_gpus, self.retries = address, jobs, num_cpus, num_gpus, retries
        self.threads = check_threads(threads)
        self.ray = import_ray()
        self.overheads: list[float] = []  # per finished cell: seconds Ray added around run_cell

    def connect(self, say: Any) -> None:
        """Join the cluster at ``address``, or start a local one (kept for later batches of cells)."""
        if self.ray.is_initialized():
            return
        # ray.init installs its own SIGTERM handler (abort); the run's graceful stop must keep its own.
        handlers = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
        try:
            self.ray.init(address=self.address or None, include_dashboard=False, configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            self.ray.shutdown()
            if not self.address:
                raise BenchError(_local_start_failed(exc)) from None
            raise BenchError(f"cannot reach the Ray cluster at {self.address!r}: {exc}; check --ray-address "
                             "(host:port of `ray start --head`), or leave it out to start a local cluster") from None
        except Exception as exc:  # noqa: BLE001 - ray.init raises many types (OSError, TimeoutError, ...)
            self.ray.shutdown()
            raise BenchError(_local_start_failed(exc) if not self.address else
                             f"cannot reach the Ray cluster at {self.address!r}: {type(exc).__name__}: "
                             f"{_first_line(exc)}; check --ray-address") from None
        finally:
            if threading.current_thread() is threading.main_thread():
                for signum, handler in handlers.items():
                    if handler is not None:
                        signal.signal(signum, handler)
        where = f"Ray cluster at {self.address}" if self.address else "a local Ray cluster"
        say(f"bench: running on {where} ({self.ray.cluster_resources().get('CPU', 0):g} CPUs, "
            f"{self.ray.cluster_resources().get('GPU', 0):g} GPUs)")

    def execute(self, cells: list[Cell], spec: RunSpec, session: Session) -> list[CellOutcome]:
        if not cells:
            return []
        self.connect(session.say)
        gpus = (1.0 if spec.device == "cuda" else 0.0) if self.num_gpus == -1 else self.num_gpus
        # No outputs path goes to the task: it trains in its own scratch folder, whatever it shares.
        task_spec = RunSpec("", spec.matrix, "cuda" if gpus > 0 else spec.device, spec.force, spec.evaluation,
                            spec.plugins)
        task = self.ray.remote(train_remotely).options(num_cpus=self.num_cpus, num_gpus=gpus,
                                                        max_retries=self.retries, retry_exceptions=False)
        return _Dispatch(self, task, task_spec, session, spec.outputs).run(cells)


class _Dispatch:
    """Submits cells as tasks (at most ``jobs`` in flight) and writes each result as it returns."""

    def __init__(self, executor: RayExecutor, task: Any, spec: RunSpec, session: Session, outputs: str):
        self.ray, self.jobs, self.task, self.spec, self.session = executor.ray, executor.jobs, task, spec, session
        self.store = ResultStore(outputs, spec.matrix)
        self.flag = self.ray.remote(num_cpus=0)(StopFlag).remote()
        self.threads = executor.threads or max(1, int(executor.num_cpus))  # see bench/executors/threads.py
        self.submitted: dict[Any, float] = {}
        self.cancelled: set[Any] = set()
        self.overheads = executor.overheads

    def run(self, cells: list[Cell]) -> list[CellOutcome]:
        pending, outcomes = list(cells), list[CellOutcome]()
        running: dict[Any, Cell] = {}
        stop, stopping = self.session.stop, False
        try:
            while pending or running:
                if stop is not None and stop.requested and not stopping:
                    pending.clear()
                    self._stop(stop.cause, running)
                    stopping = True
                while pending and (not self.jobs or len(running) < self.jobs):
                    cell = pending.pop(0)
                    running[self._submit(cell)] = cell
                done, _ = self.ray.wait(list(running), num_returns=1, timeout=POLL_S)
                for ref in done:
                    outcome = self._receive(ref, running.pop(ref))
                    if outcome is not None:
                        outcomes.append(outcome)
                        self.session.settled(outcome)
        finally:
            for ref in running:  # only after an error in the driver itself, or a second Ctrl-C
                self.ray.cancel(ref, force=True)
        return outcomes

    def _stop(self, cause: str, running: dict[Any, Cell]) -> None:
        """Running tasks checkpoint and return (they poll the flag); queued ones are cancelled, so a
        stop does not start cells only to checkpoint them a step later."""
        begun = set(self.ray.get(self.flag.set.remote(cause)))
        for ref, cell in running.items():
            if cell.id not in begun:
                self.cancelled.add(ref)
                self.ray.cancel(ref)

    def _submit(self, cell: Cell) -> Any:
        started = time.perf_counter()
        files = pack_folder(self.store.cell(cell.id).path)
        self.session.say(f"{self.session.label(cell)}: submitted to Ray")
        ref = self.task.remote(cell, self.session.label(cell), self.spec, files, self.threads, self.flag)
        self.submitted[ref] = started
        return ref

    def _receive(self, ref: Any, cell: Cell) -> CellOutcome | None:
        """The task's outcome, its folder written into ``outputs/``; None for a task the stop kept from starting."""
        record, label = self.store.cell(cell.id), self.session.label(cell)
        submitted = self.submitted.pop(ref)
        try:
            returned = self.ray.get(ref)
        except self.ray.exceptions.RayError as exc:
            if ref in self.cancelled:
                return None
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            died = f"Ray task lost ({type(exc).__name__}: {first})"
            outcome = lost_cell(cell, record, f"{died}; rerun to resume from its last checkpoint", 0, 0,
                                self.spec.device, self.session)
            self.session.say(f"{label}: {lost_line(died, outcome)}")
            return outcome
        if returned is None:
            return None
        outcome, files, lines, task_s = returned
        unpack_into(Path(record.path), files)
        # Round trip (pack, ship, schedule, start, ship back, write) beyond the cell's own run.
        self.overheads.append(time.perf_counter() - submitted - task_s)
        for line in lines:
            self.session.say(line)
        return outcome
