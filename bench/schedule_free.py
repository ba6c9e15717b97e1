"""The one warning about combining components: a schedule-free optimizer under a decaying schedule.

A Schedule-Free optimizer (Defazio et al. 2024) replaces the learning-rate schedule by averaging its
iterates; its paper runs it at a constant rate after a warmup and warns that decaying the rate as
well is not the method. Such an optimizer is tagged ``"schedule-free"``; a schedule that keeps the
rate constant after its warmup is tagged ``"flat"`` (bench.hookspecs). Any other pairing gets one
warning line, not an error: decaying anyway is a legitimate experiment, only not the method.
"""

from __future__ import annotations

from typing import Any, Mapping

from bench.registry import Registry

SCHEDULE_FREE = "schedule-free"
FLAT = "flat"


def schedule_free_problem(config: Mapping[str, Any], registry: Registry) -> str | None:
    """What is wrong with this cell's optimizer/schedule pairing, as a phrase naming the fix, or None."""
    optimizer = registry.get("optimizer", config["optimizer"])
    schedule = registry.get("schedule", config["schedule"])
    if SCHEDULE_FREE not in optimizer.tags or FLAT in schedule.tags:
        return None
    return (f"optimizer {optimizer.name!r} is schedule-free, but schedule {schedule.name!r} decays the learning "
            f"rate as well (the method runs at a constant rate); set schedule = \"constant\" "
            f"(with warmup_steps for a warmup)")
