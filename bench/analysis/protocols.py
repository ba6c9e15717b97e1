"""Rules that decide whether a comparison may be read at all: AlgoPerf's studies x trials
aggregation, the edge-of-range check on a sweep's winner, and the end-of-schedule check on a ranking.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

# Schedules whose learning rate stays put: a ranking mid-run is as good as one at the end.
FLAT_SCHEDULES = frozenset({"constant"})


def studies_times(trials: pd.DataFrame, *, algorithm: str = "algorithm", workload: str = "workload",
                  study: str = "study", cost: str = "cost") -> pd.DataFrame:
    """AlgoPerf's aggregation: per (workload, algorithm), the best (lowest) cost of each study's
    trials, then the median over studies; a miss is infinite, so a workload that more than half of
    the studies missed stays infinite. Index = workload, columns = algorithm (feeds profiles.ratios)."""
    frame = trials[[workload, algorithm, study, cost]].copy()
    frame[cost] = frame[cost].astype(float).fillna(math.inf)
    best = frame.groupby([workload, algorithm, study], sort=True)[cost].min()
    median = best.groupby(level=[0, 1]).agg(lambda v: float(np.median(v.to_numpy())))
    return median.unstack(algorithm).fillna(math.inf)


def edge_values(values, best) -> str | None:
    """'lowest' / 'highest' when ``best`` is the smallest / largest of at least three distinct values
    tried: the search range may cut off the optimum. None otherwise (or for non-numbers)."""
    try:
        tried = sorted({float(v) for v in values if v is not None and math.isfinite(float(v))})
        best = float(best)
    except (TypeError, ValueError):
        return None
    if len(tried) < 3:
        return None
    if math.isclose(best, tried[0], rel_tol=1e-12):
        return "lowest"
    if math.isclose(best, tried[-1], rel_tol=1e-12):
        return "highest"
    return None


def ranked_before_end(summary: dict) -> str | None:
    """Why a cell's result is not an end-of-schedule result under a decaying schedule, or None.

    With a decaying learning rate the order of runs flips as the rate falls, so a rank is only
    meaningful at the end of each run's own schedule."""
    config = summary.get("config") or {}
    schedule = config.get("schedule")
    if schedule is None or schedule in FLAT_SCHEDULES:
        return None
    steps, planned = summary.get("steps") or summary.get("step"), summary.get("planned_steps")
    status = summary.get("status")
    if status in ("paused", "pruned"):
        return f"{status} at step {steps} of a {schedule} schedule"
    if steps and planned and steps < planned:
        return f"stopped at step {steps} of {planned} ({summary.get('stopped_by') or 'early'}), {schedule} schedule"
    epochs, best_epoch = summary.get("epochs"), summary.get("best_epoch")
    if epochs and best_epoch and best_epoch < epochs:
        return f"best val loss from epoch {best_epoch} of {epochs}, not the end of its {schedule} schedule"
    return None
