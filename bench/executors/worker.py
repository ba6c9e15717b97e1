"""The process a local pool starts per slot: owns one GPU (or a share of the CPU cores), trains
the cells the driver sends it one by one, and reports back through its pipe.

Messages to the driver: ``("start", cell_id, where)``, ``("progress", cell_id, step, total, loss)``,
``("say", line)``, ``("done", CellOutcome)``. ``None`` from the driver (or the pipe closing) ends
the worker.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from dataclasses import dataclass, field
from typing import Any

from bench.hookspecs import hookimpl


@dataclass(frozen=True)
class Slot:
    """What one worker may use: environment set before torch starts CUDA, and its thread count."""

    index: int
    env: dict[str, str] = field(default_factory=dict)
    threads: int | None = None

    @property
    def where(self) -> str:
        if self.env.get("CUDA_VISIBLE_DEVICES"):
            return f"GPU {self.env['CUDA_VISIBLE_DEVICES']}"
        return f"{self.threads} CPU thread{'s' * (self.threads != 1)}" if self.threads else "CPU"


class SharedFd:
    """An open file descriptor handed to a spawned child (same open file, so the same flock):
    the run lock stays held while any worker of a dead driver still lives."""

    def __init__(self, fd: int):
        self.fd = fd

    def __reduce__(self) -> tuple[Any, ...]:
        from multiprocessing import reduction
        return (_adopt_fd, (reduction.DupFd(self.fd),))


def _adopt_fd(duplicate: Any) -> SharedFd:
    return SharedFd(duplicate.detach())


class PipeReporter:
    """Forwards the trainer's lifecycle hooks to the driver, which draws the progress board."""

    def __init__(self, conn: Any):
        self.conn = conn

    @hookimpl
    def bench_run_start(self, cell: dict[str, Any], total_steps: int) -> None:
        self.conn.send(("progress", cell["id"], 0, total_steps, None))

    @hookimpl
    def bench_log_step(self, cell: dict[str, Any], step: int, metrics: dict[str, float]) -> None:
        self.conn.send(("progress", cell["id"], step, None, metrics.get("train_loss")))

    @hookimpl
    def bench_evaluation(self, cell: dict[str, Any], epoch: int, step: int, metrics: dict[str, float]) -> None:
        line = f"  {cell['name']}: epoch {epoch} step {step}: val loss {metrics['loss']:.4f} ppl {metrics['ppl']:.2f}"
        self.conn.send(("say", line))


def _die_with_parent() -> None:
    """Linux: the kernel SIGKILLs this worker when the driver dies, however it dies. Its cell
    resumes from the last checkpoint on the next run; elsewhere the pipe closing ends it."""
    if sys.platform.startswith("linux"):
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def worker_main(slot: Slot, spec: Any, conn: Any, lock: SharedFd | None, parent: int) -> None:
    # Before anything imports torch's CUDA state: this process sees only its own GPU.
    os.environ.update(slot.env)
    _die_with_parent()
    if os.getppid() != parent:  # the driver died before the line above took effect
        return
    os.setpgrp()  # a terminal's Ctrl-C reaches the driver only; it forwards one SIGTERM per worker
    import torch

    from bench.registry import PluginSelection, load_plugins
    from bench.runner import CellContext, run_cell
    from bench.selection import resolve_device
    from bench.signals import GracefulStop
    from bench.store import ResultStore

    if slot.threads:
        torch.set_num_threads(slot.threads)
    # console's bar would fight the driver's board; the driver already reported plugins that fail to
    # load, and hooks that fail in this worker are reported through the driver.
    selection = (spec.plugins or PluginSelection.from_options()).without("console")
    plugins = load_plugins(selection, extra_plugins=[PipeReporter(conn)], warn=lambda line: None,
                           hook_warn=lambda line: conn.send(("say", line)))
    with GracefulStop() as stop:
        context = CellContext(plugins.registry, plugins.hooks, ResultStore(spec.outputs, spec.matrix),
                              resolve_device(spec.device), spec.force, stop, spec.evaluation)
        while not stop.requested:
            try:
                message = conn.recv()
            except EOFError:
                break
            if message is None:
                break
            cell, label = message
            conn.send(("start", cell.id, slot.where))
            conn.send(("done", run_cell(cell, context, label, lambda line: conn.send(("say", line)))))
    # ``lock`` stays open until this process exits: the driver's run lock outlives no worker.
