"""The ``local`` executor: cells one after another in this process, or ``jobs`` worker processes.

Workers are started with the ``spawn`` method (a fresh interpreter, no CUDA state inherited).
With CUDA each worker owns one GPU: ``CUDA_VISIBLE_DEVICES`` is set before torch starts CUDA,
so NVML figures are read for the worker's own PID on its own device. On CPU the cores this
process may use are split evenly (``torch.set_num_threads``), so N jobs never oversubscribe, unless
``threads`` fixes every cell's count (see :mod:`bench.executors.threads`).

A worker that dies under a cell (SIGKILL, the OOM killer) leaves that cell ``interrupted``: the
next `bench run` resumes it from its last checkpoint. The pool starts a fresh worker in its
place and goes on. Workers die with the driver (Linux ``PR_SET_PDEATHSIG``) and hold the
driver's run lock, so a rerun never overlaps with them.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import Any, Iterator

from bench.cells import Cell
from bench.executors.progress import ProgressBoard, terminal_is_live
from bench.executors.threads import check_threads, using_threads
from bench.executors.worker import SharedFd, Slot, worker_main
from bench.runner import CellOutcome, RunSpec, Session, lost_cell, lost_line, run_sequentially, stderr_line
from bench.store import ResultStore

POLL_S = 0.25
EXIT_WAIT_S = 30.0


def cpu_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def visible_gpus() -> list[str]:
    """GPU ids as CUDA_VISIBLE_DEVICES would name them, honouring the driver's own setting."""
    import torch
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g.strip() for g in listed.split(",") if g.strip()][:torch.cuda.device_count()]
    return [str(i) for i in range(torch.cuda.device_count())]


def plan_slots(jobs: int, device: str, say: Any, threads: int = 0) -> list[Slot]:
    """One slot per worker: a GPU each on CUDA; on CPU ``threads`` torch threads each, or (0) an
    equal share of the cores."""
    if device == "cuda":
        gpus = visible_gpus()
        if jobs > len(gpus):
            say(f"bench: --jobs {jobs} but {len(gpus)} GPU(s) visible: running {len(gpus)} at a time")
        return [Slot(i, {"CUDA_VISIBLE_DEVICES": gpu}) for i, gpu in enumerate(gpus[:jobs])]
    cores = cpu_cores()
    if jobs > cores:
        say(f"bench: --jobs {jobs} but {cores} CPU core(s) available: running {cores} at a time")
        jobs = cores
    return [Slot(i, {"CUDA_VISIBLE_DEVICES": ""}, threads=threads or max(1, cores // jobs)) for i in range(jobs)]


class LocalExecutor:
    name = "local"

    def __init__(self, jobs: int = 1, threads: int = 0):
        if jobs < 1:
            raise ValueError(f"jobs must be >= 1, got {jobs}")
        self.jobs, self.threads = jobs, check_threads(threads)
        self.pool: Pool | None = None
        self.keep = False  # inside kept(): workers stay up between execute() calls

    def execute(self, cells: list[Cell], spec: RunSpec, session: Session) -> list[CellOutcome]:
        if self.jobs == 1 or len(cells) < 2:
            # A lone cell of a --jobs run trains here with a worker's share, as it would in a worker.
            share = self.threads or (0 if self.jobs == 1 or spec.device == "cuda" else max(1, cpu_cores() // self.jobs))
            with using_threads(share):
                return run_sequentially(cells, spec, session)
        slots = plan_slots(min(self.jobs, len(cells)), spec.device, session.say, self.threads)
        lock_fd = getattr(session.lock, "fd", None)
        if self.pool is None or (self.pool.slots, self.pool.spec, self.pool.lock_fd) != (slots, spec, lock_fd):
            self.close()
            self.pool = Pool(slots, spec, lock_fd)
        return self.pool.run(cells, session, keep=self.keep)

    @contextmanager
    def kept(self) -> Iterator[None]:
        """Keep the worker processes between batches (a sweep's rounds): each batch then skips their
        start-up (a fresh interpreter importing torch and the plugins). They end when this block does."""
        self.keep = True
        try:
            yield
        finally:
            self.keep = False
            self.close()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shut_down()
            self.pool = None


@dataclass
class Worker:
    slot: Slot
    process: Any
    conn: Any
    cell: Cell | None = None
    step: int = 0
    total: int = 0
    signalled: bool = False


class Pool:
    """Hands cells to idle workers and collects outcomes until every cell has one. Its workers end
    with each run, or stay for the next one (``keep``) unless a stop request came."""

    def __init__(self, slots: list[Slot], spec: RunSpec, lock_fd: int | None):
        self.slots, self.spec, self.lock_fd = slots, spec, lock_fd
        self.context = multiprocessing.get_context("spawn")
        self.store = ResultStore(spec.outputs, spec.matrix)
        self.lock = SharedFd(lock_fd) if lock_fd is not None else None
        self.workers: list[Worker] = []

    def run(self, cells: list[Cell], session: Session, keep: bool = False) -> list[CellOutcome]:
        self.session = session
        # Redrawn in place only when the run prints to a terminal itself; a caller's own ``say`` gets plain lines.
        live = session.say is stderr_line and terminal_is_live(sys.stderr)
        self.board = ProgressBoard(live=live, plain=session.say)
        pending, outcomes, finished = deque(cells), list[CellOutcome](), False
        self.workers = self.workers or [self._start(slot) for slot in self.slots]
        try:
            while pending or self._busy():
                stopping = self.session.stop is not None and self.session.stop.requested
                if stopping:
                    self._forward_stop()
                    pending.clear()
                for index, worker in enumerate(self.workers):
                    if worker.cell is None and pending:
                        if not worker.process.is_alive():  # died under its last cell: replace it
                            worker.conn.close()
                            worker = self.workers[index] = self._start(worker.slot)
                        worker.cell = pending.popleft()
                        worker.step = worker.total = 0
                        try:
                            worker.conn.send((worker.cell, self.session.label(worker.cell)))
                        except OSError:  # it died just now: _collect finds it and records the cell
                            pass
                outcomes += self._collect()
            finished = not (self.session.stop is not None and self.session.stop.requested)
        finally:
            if not (keep and finished):  # a stopped worker has ended; an error in the driver ends them all
                self.shut_down()
            self.board.close()
        return outcomes

    def _busy(self) -> list[Worker]:
        return [w for w in self.workers if w.cell is not None]

    def _start(self, slot: Slot) -> Worker:
        ours, theirs = self.context.Pipe()
        process = self.context.Process(target=worker_main, args=(slot, self.spec, theirs, self.lock, os.getpid()),
                                       name=f"bench-worker-{slot.index}", daemon=True)
        process.start()
        theirs.close()
        return Worker(slot, process, ours)

    def _collect(self) -> list[CellOutcome]:
        busy = self._busy()
        ready = wait([w.conn for w in busy] + [w.process.sentinel for w in busy], timeout=POLL_S)
        outcomes = []
        for worker in busy:
            if worker.conn in ready or worker.process.sentinel in ready:
                outcome = self._drain(worker)
                if outcome is not None:
                    outcomes.append(outcome)
        return outcomes

    def _drain(self, worker: Worker) -> CellOutcome | None:
        """Handle whatever the worker sent; a dead worker's cell becomes ``interrupted``."""
        try:
            while worker.conn.poll():
                outcome = self._handle(worker, worker.conn.recv())
                if outcome is not None:
                    return outcome
        except (EOFError, OSError):
            pass
        if worker.process.is_alive():
            return None
        return self._lost(worker)

    def _handle(self, worker: Worker, message: tuple) -> CellOutcome | None:
        assert worker.cell is not None  # messages come from busy workers only
        kind, label = message[0], self.session.label(worker.cell)
        if kind == "start":
            self.board.start(label, message[2])
        elif kind == "progress":
            _, _, worker.step, total, loss = message
            worker.total = total or worker.total
            self.board.update(label, worker.step, worker.total, loss)
        elif kind == "say":
            self.board.say(message[1])
        elif kind == "done":
            self.board.finish(label)
            worker.cell = None
            self.session.settled(message[1])
            return message[1]
        return None

    def _lost(self, worker: Worker) -> CellOutcome:
        cell, code = worker.cell, worker.process.exitcode
        assert cell is not None  # only busy workers are drained
        label = self.session.label(cell)
        how = f"killed by {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit code {code}"
        died = f"worker process {worker.process.pid} died ({how})"
        outcome = lost_cell(cell, self.store.cell(cell.id), f"{died} at step {worker.step}; rerun to resume from "
                            "its last checkpoint", worker.step, worker.total, self.spec.device, self.session)
        self.board.finish(label)
        self.board.say(f"{label}: {lost_line(died, outcome)}")
        worker.cell = None  # the next cell for this slot gets a fresh worker
        self.session.settled(outcome)
        return outcome

    def _forward_stop(self) -> None:
        """The driver was asked to stop: each busy worker checkpoints its cell and ends."""
        for worker in self._busy():
            if not worker.signalled and worker.process.is_alive():
                os.kill(worker.process.pid, signal.SIGTERM)
                worker.signalled = True

    def shut_down(self) -> None:
        for worker in self.workers:
            try:
                worker.conn.send(None)
            except OSError:  # a dead worker's pipe
                pass
        for worker in self.workers:
            worker.process.join(EXIT_WAIT_S if worker.cell is None else 1.0)
            if worker.process.is_alive():  # a second Ctrl-C, or an error in the driver itself
                worker.process.kill()
                worker.process.join()
            worker.conn.close()
        self.workers = []
