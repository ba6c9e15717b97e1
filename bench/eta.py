"""How long the rest of a run will take: planned optimizer steps left, at the rate the run has
settled steps so far (wall clock, so parallel workers and evaluation are counted); and a cell's own
steps/s from its progress logs."""

from __future__ import annotations

import statistics
import time
from collections import deque
from typing import Any, Callable, Iterable


def format_duration(seconds: float) -> str:
    """``1h02m``, ``3m05s`` or ``12s``: precise enough for a time-left estimate."""
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def steps_run(summary: dict[str, Any] | None) -> int:
    """Optimizer steps a cell's summary says it has trained: a finished cell's ``steps``, or the
    ``step`` a paused, failed or interrupted one reached."""
    summary = summary or {}
    return int(summary.get("steps") or summary.get("step") or 0)


def planned_steps(config: dict[str, Any]) -> int | None:
    """A cell's optimizer steps when its config fixes them (``max_steps``, or ``epochs`` x
    ``steps_per_epoch``); None when they depend on the data (one pass) or on a budget."""
    if config.get("max_flops") or config.get("max_tokens"):
        return None
    if config.get("max_steps"):
        return int(config["max_steps"])
    if config.get("steps_per_epoch"):
        return int(config["epochs"]) * int(config["steps_per_epoch"])
    return None


class MatrixEta:
    """Fed each settled cell (finished, failed or lost), it says how many are left and for how long.

    A cell whose steps the config does not fix counts as the mean of the others (or of the steps the
    settled cells really ran). The rate is steps settled per wall second since the first cell started,
    so it already includes evaluation, checkpoints and however many cells run at once."""

    def __init__(self, cells: Iterable[Any], clock: Callable[[], float] = time.monotonic):
        self.planned = {cell.id: planned_steps(cell.config) for cell in cells}
        self.left = set(self.planned)
        self.clock = clock
        self.started = clock()
        self.steps_done = 0.0

    def settled(self, cell_id: str, steps_run: int | None) -> str | None:
        """Count one cell as done; the line to show, or None when nothing is left or known."""
        if cell_id not in self.left:
            return None
        self.left.discard(cell_id)
        self.steps_done += self.planned[cell_id] or steps_run or self._typical()
        elapsed = self.clock() - self.started
        if not self.left or elapsed <= 0 or self.steps_done <= 0:
            return None
        steps_left = sum(self.planned[c] or self._typical() for c in self.left)
        seconds = steps_left / (self.steps_done / elapsed)
        done, total = len(self.planned) - len(self.left), len(self.planned)
        return (f"matrix: {done}/{total} cells settled, {len(self.left)} left, about {format_duration(seconds)} "
                f"to go ({steps_left:.0f} planned steps at the {self.steps_done / elapsed:.1f} steps/s so far)")

    def _typical(self) -> float:
        known = [steps for steps in self.planned.values() if steps]
        if known:
            return sum(known) / len(known)
        settled = len(self.planned) - len(self.left)
        return self.steps_done / settled if settled else 0.0


class PlannedWork:
    """Time left for a planned number of steps (a sweep's): the plan minus the steps done (before
    this session too, on resume), at the steps per wall second this session has trained."""

    def __init__(self, planned: float | None, done: float = 0.0, clock: Callable[[], float] = time.monotonic):
        self.planned = planned  # None: a budget, not a plan, decides the length
        self.done = done
        self.session_steps = 0.0
        self.clock = clock
        self.started = clock()

    def trained(self, steps: float) -> None:
        self.done += steps
        self.session_steps += steps

    def rate(self) -> float | None:
        """Steps per wall second since this session started; None before it has trained any."""
        elapsed = self.clock() - self.started
        return self.session_steps / elapsed if self.session_steps > 0 and elapsed > 0 else None

    def steps_left(self) -> float | None:
        return None if self.planned is None else max(0.0, self.planned - self.done)

    def seconds_left(self) -> float | None:
        left, rate = self.steps_left(), self.rate()
        return None if left is None or rate is None else left / rate


class StepRate:
    """A cell's training steps per second from its progress logs, steady from early on.

    The session's first log is only a starting point: the steps before it hold the warm-up
    (compilation, allocation, the first batches). After it, the rate is the median seconds per step
    of the last ``window`` intervals between logs, so one slow interval (warm-up that outlasts the
    first log, a recompile, a checkpoint write) does not swing it; there is none before
    ``min_intervals`` intervals. Fed ``elapsed_s`` (training seconds: evaluation excluded)."""

    def __init__(self, window: int = 9, min_intervals: int = 3):
        self.min_intervals = min_intervals
        self.per_step: deque[float] = deque(maxlen=window)
        self.last: tuple[int, float] | None = None

    def log(self, step: int, elapsed_s: float) -> float | None:
        """Count one log; steps per second, or None while there are too few intervals."""
        if self.last is not None and step > self.last[0] and elapsed_s > self.last[1]:
            self.per_step.append((elapsed_s - self.last[1]) / (step - self.last[0]))
        self.last = (step, elapsed_s)
        if len(self.per_step) < self.min_intervals:
            return None
        return 1.0 / statistics.median(self.per_step)
