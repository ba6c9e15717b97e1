"""Time-to-target: when a cell's validation loss first reached a target.

Validation runs only every ``eval_every`` steps (and at epoch ends), so the loss between two
evaluations is unknown. We read it the way AlgoPerf does: the target counts as reached at the
first *evaluation* whose loss is at or below it, and the step, tokens, FLOPs and seconds are
those of that evaluation. The true crossing lies after the previous evaluation, so every figure
is an upper bound, tight to one evaluation interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

READING = ("reached = the first evaluation with val loss <= target (no interpolation between evaluations, "
           "so each figure is an upper bound within one eval_every interval); seconds are training time, "
           "evaluation excluded; tokens = step x tokens/step, FLOPs = tokens x FLOPs/token")


@dataclass(frozen=True)
class Reached:
    step: int
    time_s: float
    val_loss: float


def first_reaching(steps, losses, times, target: float) -> Reached | None:
    """The first evaluation (in step order) whose loss is <= target, or None if none is."""
    order = np.argsort(np.asarray(steps, dtype=float), kind="stable")
    steps, losses, times = (np.asarray(v, dtype=float)[order] for v in (steps, losses, times))
    hits = np.flatnonzero(np.isfinite(losses) & (losses <= target))
    if not len(hits):
        return None
    i = hits[0]
    return Reached(int(steps[i]), float(times[i]), float(losses[i]))


def target_from_ppl(ppl: float) -> float:
    return math.log(ppl)


def derived_targets(best_loss: pd.Series, tolerance: float) -> pd.Series:
    """Per workload: the best val loss any algorithm reached, times ``tolerance`` (>= 1)."""
    return best_loss * tolerance


MEASURES = ("step", "tokens", "flops", "time_s")


def cost_at(reached: Reached | None, tokens_per_step: float, flops_per_token: float) -> dict[str, float]:
    """Step, tokens, FLOPs and seconds at the evaluation that reached the target; inf when not reached."""
    if reached is None:
        return {m: math.inf for m in MEASURES}
    tokens = reached.step * tokens_per_step
    return {"step": float(reached.step), "tokens": tokens, "flops": tokens * flops_per_token,
            "time_s": reached.time_s}
