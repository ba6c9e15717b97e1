"""Built-in learning-rate schedules: pure functions of the step, so resuming needs no state.

Every schedule warms up linearly from 0 to ``lr`` over ``[0, warmup_steps)`` and ends at
``lr_min = min_lr_fraction * lr``.

* ``constant``: ``lr`` after warmup.
* ``cosine``: with ``a = warmup_steps`` and ``b = decay_steps`` (0 means the run's last step),
  ``lr * t / a`` for ``t < a``; ``lr_min + (lr - lr_min) * (1 + cos(pi * (t - a) / (b - a))) / 2``
  for ``a <= t < b``; ``lr_min`` for ``t >= b``.
* ``linear``: like cosine with a straight line from ``lr`` down to ``lr_min`` over ``[a, b)``.
* ``wsd`` (warmup-stable-decay): ``lr`` until the last ``decay_fraction`` of the run, then linear
  down to ``lr_min``.
"""

from __future__ import annotations

import math
from typing import Callable

from bench.components import Component
from bench.hookspecs import hookimpl


def _validate(lr: float, total_steps: int, warmup_steps: int, min_lr_fraction: float) -> None:
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
    if warmup_steps >= max(total_steps, 1) and total_steps > 0:
        raise ValueError(f"warmup_steps ({warmup_steps}) must be smaller than the run's {total_steps} steps")
    if not 0 <= min_lr_fraction <= 1:
        raise ValueError(f"min_lr_fraction must be in [0, 1], got {min_lr_fraction}")


def _decay_end(total_steps: int, decay_steps: int, warmup_steps: int) -> int:
    end = decay_steps or total_steps
    if end <= warmup_steps:
        raise ValueError(f"decay_steps ({end}) must exceed warmup_steps ({warmup_steps})")
    return end


def constant(*, lr: float, total_steps: int, warmup_steps: int = 0,
             min_lr_fraction: float = 0.0) -> Callable[[int], float]:
    _validate(lr, total_steps, warmup_steps, min_lr_fraction)
    return lambda step: lr * step / warmup_steps if step < warmup_steps else lr


def _warmup_then_decay(lr: float, a: int, b: int, lr_min: float,
                       shape: Callable[[float], float]) -> Callable[[int], float]:
    """Linear warmup over ``[0, a)``, ``lr_min + (lr - lr_min) * shape(progress)`` over ``[a, b)``
    with ``shape`` falling from 1 at progress 0 towards 0 at progress 1, then ``lr_min``."""

    def schedule(step: int) -> float:
        if step < a:
            return lr * step / a
        if step >= b:
            return lr_min
        return lr_min + (lr - lr_min) * shape((step - a) / (b - a))

    return schedule


def cosine(*, lr: float, total_steps: int, warmup_steps: int = 0, min_lr_fraction: float = 0.1,
           decay_steps: int = 0) -> Callable[[int], float]:
    _validate(lr, total_steps, warmup_steps, min_lr_fraction)
    return _warmup_then_decay(lr, warmup_steps, _decay_end(total_steps, decay_steps, warmup_steps),
                              lr * min_lr_fraction, lambda progress: 0.5 * (1.0 + math.cos(math.pi * progress)))


def linear(*, lr: float, total_steps: int, warmup_steps: int = 0, min_lr_fraction: float = 0.0,
           decay_steps: int = 0) -> Callable[[int], float]:
    _validate(lr, total_steps, warmup_steps, min_lr_fraction)
    return _warmup_then_decay(lr, warmup_steps, _decay_end(total_steps, decay_steps, warmup_steps),
                              lr * min_lr_fraction, lambda progress: 1.0 - progress)


def wsd(*, lr: float, total_steps: int, warmup_steps: int = 0, min_lr_fraction: float = 0.0,
        decay_fraction: float = 0.2) -> Callable[[int], float]:
    _validate(lr, total_steps, warmup_steps, min_lr_fraction)
    if not 0 < decay_fraction <= 1:
        raise ValueError(f"decay_fraction must be in (0, 1], got {decay_fraction}")
    decay_start = max(warmup_steps, int(round(total_steps * (1 - decay_fraction))))
    lr_min = lr * min_lr_fraction

    def schedule(step: int) -> float:
        if step < warmup_steps:
            return lr * step / warmup_steps
        if step < decay_start:
            return lr
        span = max(total_steps - decay_start, 1)
        return lr + (lr_min - lr) * min(1.0, (step - decay_start) / span)

    return schedule


@hookimpl
def bench_schedules():
    return [
        Component("constant", constant, {"warmup_steps": 0, "min_lr_fraction": 0.0},
                  "constant lr after an optional linear warmup", tags={"flat"}),
        Component("cosine", cosine, {"warmup_steps": 0, "min_lr_fraction": 0.1, "decay_steps": 0},
                  "linear warmup, half-cosine decay to min_lr_fraction*lr, then flat"),
        Component("linear", linear, {"warmup_steps": 0, "min_lr_fraction": 0.0, "decay_steps": 0},
                  "linear warmup, then linear decay to min_lr_fraction*lr"),
        Component("wsd", wsd, {"warmup_steps": 0, "min_lr_fraction": 0.0, "decay_fraction": 0.2},
                  "warmup-stable-decay: flat lr, linear decay over the last decay_fraction"),
    ]
