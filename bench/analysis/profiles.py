"""AlgoPerf performance profiles over workloads.

For algorithm a and workload w, r(a, w) = t(a, w) / min_a' t(a', w), infinite when a never
reached w's target (and for every algorithm on a workload nobody reached). rho_a(tau) is the
fraction of workloads with r(a, w) <= tau, and the score is the area under rho_a over
tau in [1, r_max] divided by (r_max - 1), so 1 means fastest everywhere and 0 means never
within r_max of the fastest.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

R_MAX = 4.0


def ratios(times: pd.DataFrame) -> pd.DataFrame:
    """``times``: index = workload, columns = algorithm, values = time to target (inf = not reached)."""
    values = times.astype(float)
    best = values.min(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = values.div(best, axis=0)
    out[~np.isfinite(values)] = np.inf
    out.loc[~np.isfinite(best)] = np.inf
    # t = 0 (target met at the first evaluation by the best) is a tie at ratio 1 for those at 0.
    zero = best == 0
    if zero.any():
        out.loc[zero] = np.where(values.loc[zero] == 0, 1.0, np.inf)
    return out


def profile(ratio: pd.DataFrame, taus) -> pd.DataFrame:
    """rho_a(tau): index = tau, columns = algorithm."""
    taus = np.asarray(taus, dtype=float)
    r = ratio.to_numpy(dtype=float)
    rho = (r[None, :, :] <= taus[:, None, None]).mean(axis=1)
    return pd.DataFrame(rho, index=pd.Index(taus, name="tau"), columns=ratio.columns)


def area_scores(ratio: pd.DataFrame, r_max: float = R_MAX) -> pd.Series:
    """Exact area under the step function rho_a over [1, r_max], normalised to [0, 1].

    A workload with ratio r <= r_max adds (r_max - r) / (r_max - 1) / n_workloads."""
    r = ratio.to_numpy(dtype=float)
    inside = np.where(r <= r_max, (r_max - np.maximum(r, 1.0)) / (r_max - 1.0), 0.0)
    return pd.Series(inside.mean(axis=0), index=ratio.columns, name="score")
