"""Schedule checks: ``factory(*, lr, total_steps, **hparams) -> Callable[[int], float]``.

A schedule maps a 0-based optimizer step to that step's learning rate. The trainer calls it once
per step and, on resume, continues from the checkpoint's step; a schedule with state exposes
``state_dict()`` / ``load_state_dict()``, which the checkpoint carries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from bench.components import Component
from bench.testing.kit import KindChecks, require

TOTAL = 40


@dataclass
class ScheduleCase:
    component: Component
    lr: float
    hparams: dict[str, Any] = field(default_factory=dict)

    def build(self, total_steps: int = TOTAL, lr: float | None = None) -> Callable[[int], float]:
        schedule = self.component.factory(lr=self.lr if lr is None else lr, total_steps=total_steps, **self.hparams)
        require(callable(schedule), f"factory returned {type(schedule).__name__}, not a callable step -> lr")
        return schedule


def make_case(component: Component, overrides: Mapping[str, Any]) -> ScheduleCase:
    hparams = {**component.defaults, **overrides}
    return ScheduleCase(component, float(hparams.pop("lr", 1e-3)), hparams)


def check_values(case: ScheduleCase) -> None:
    schedule = case.build()
    for step in range(TOTAL + 1):
        value = schedule(step)
        require(isinstance(value, (int, float)) and not isinstance(value, bool),
                f"schedule({step}) returned {value!r}; return a Python float")
        require(math.isfinite(value) and 0 <= value <= case.lr * (1 + 1e-9),
                f"schedule({step}) = {value!r}, outside [0, lr={case.lr}]: lr is the peak learning rate")
    require(any(schedule(step) > 0 for step in range(TOTAL)), f"the lr is 0 on every one of {TOTAL} steps")


def check_scales_with_lr(case: ScheduleCase) -> None:
    base, doubled = case.build(), case.build(lr=2 * case.lr)
    for step in range(TOTAL):
        require(math.isclose(doubled(step), 2 * base(step), rel_tol=1e-9, abs_tol=1e-15),
                f"with lr doubled, schedule({step}) went {base(step)!r} -> {doubled(step)!r}, not twice as much: "
                "the matrix's lr must set the schedule's scale")


def check_resume(case: ScheduleCase) -> None:
    """Steps k.. of a schedule rebuilt from the checkpoint (its state_dict, if any) equal the original's."""
    half = TOTAL // 2
    whole = case.build()
    expected = [whole(step) for step in range(TOTAL)]
    first = case.build()
    for step in range(half):
        first(step)
    resumed = case.build()
    if hasattr(first, "state_dict"):
        require(hasattr(resumed, "load_state_dict"), "a schedule with state_dict() needs load_state_dict() too")
        resumed.load_state_dict(first.state_dict())  # type: ignore[attr-defined]
    got = [resumed(step) for step in range(half, TOTAL)]
    require(got == expected[half:], f"resumed at step {half}, the schedule gave {got[:3]}... instead of "
            f"{expected[half:half + 3]}...: keep state in state_dict()/load_state_dict() or make it a function of step")


def check_short_runs(case: ScheduleCase) -> None:
    """A run of 1 or 2 steps either works or is refused with ValueError (never a ZeroDivisionError)."""
    for total in (1, 2):
        try:
            schedule = case.build(total_steps=total)
        except ValueError:
            continue
        for step in range(total + 1):
            value = schedule(step)
            require(math.isfinite(value), f"with total_steps={total}, schedule({step}) = {value!r}")


def check_rejects_nonpositive_lr(case: ScheduleCase) -> None:
    try:
        case.build(lr=0.0)
    except ValueError:
        return
    require(False, "lr=0.0 must raise ValueError in the factory (a schedule of zeros trains nothing)")


KIND = KindChecks("schedule", (check_values, check_scales_with_lr, check_resume, check_short_runs,
                               check_rejects_nonpositive_lr), make_case)
