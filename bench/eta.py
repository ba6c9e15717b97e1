"""How long the rest of a matrix will take: planned optimizer steps of the cells left, at the rate
the run has settled steps so far (wall clock, so parallel workers and evaluation are counted)."""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable


def format_duration(seconds: float) -> str:
    """``1h02m``, ``3m05s`` or ``12s``: precise enough for a time-left estimate."""
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


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
