"""Seeds and significance: a t interval per configuration and paired tests between configurations.

Intervals are Student-t intervals over seeds (n - 1 degrees of freedom), the usual choice for
the 2-10 seeds a benchmark affords (a bootstrap over 3 values has only 10 distinct resamples).
Comparisons pair two configurations seed by seed (same seed = same data order and init stream)
and test the mean paired difference with ``scipy.stats.ttest_rel``; the effect size next to each
p-value is Cohen's d_z (mean paired difference / its standard deviation). A table of many pairs
is corrected with Holm's step-down method, which keeps the chance of any false 'better'/'worse'
in the table at or below alpha.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

CONFIDENCE = 0.95
ALPHA = 0.05


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    n: int


def t_interval(values, confidence: float = CONFIDENCE) -> Interval:
    """Mean and Student-t confidence interval; the bounds are NaN with fewer than two values."""
    data = np.asarray(values, dtype=float)
    data = data[np.isfinite(data)]
    n = len(data)
    if n == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    mean = float(data.mean())
    if n < 2:
        return Interval(mean, float("nan"), float("nan"), n)
    sem = float(stats.sem(data))
    if sem == 0.0:
        return Interval(mean, mean, mean, n)
    low, high = stats.t.interval(confidence, n - 1, loc=mean, scale=sem)
    return Interval(mean, float(low), float(high), n)


@dataclass(frozen=True)
class Comparison:
    n: int
    mean_difference: float  # a - b: negative means a reached the lower (better) value
    low: float
    high: float
    p_value: float
    verdict: str
    effect: float = float("nan")  # Cohen's d_z: mean paired difference / sd of the differences


def verdict(n: int, mean_difference: float, p_value: float, alpha: float = ALPHA) -> str:
    """'better' / 'worse' (for a, lower is better) when p < alpha, else 'not distinguishable'."""
    if n < 2:
        return "no claim possible with 1 seed"
    if np.isfinite(p_value) and p_value < alpha and mean_difference != 0:
        return "better" if mean_difference < 0 else "worse"
    return f"not distinguishable at {n} seeds"


def paired_comparison(a, b, confidence: float = CONFIDENCE, alpha: float = ALPHA) -> Comparison:
    """Paired t test of a against b (equal-length arrays, element i of each from the same seed)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    n = len(a)
    diff = a - b
    interval = t_interval(diff, confidence)
    if n < 2:
        p = float("nan")
    elif np.all(diff == diff[0]):
        # ttest_rel divides by a zero spread: identical runs prove nothing, a constant shift is certain.
        p = 1.0 if diff[0] == 0 else 0.0
    else:
        p = float(stats.ttest_rel(a, b).pvalue)
    return Comparison(n, interval.mean, interval.low, interval.high, p, verdict(n, interval.mean, p, alpha),
                      cohen_dz(diff))


def cohen_dz(diff) -> float:
    """Mean of paired differences over their sample standard deviation (inf for a constant shift, NaN
    below two pairs or for identical runs). |d_z| of 0.2 / 0.5 / 0.8 reads small / medium / large."""
    diff = np.asarray(diff, dtype=float)
    if len(diff) < 2:
        return float("nan")
    sd = float(diff.std(ddof=1))
    mean = float(diff.mean())
    if sd == 0.0:
        return float("nan") if mean == 0 else math.copysign(math.inf, mean)
    return mean / sd


def holm(p_values) -> np.ndarray:
    """Holm-adjusted p-values (step-down, monotone, capped at 1); NaNs stay NaN and do not count.

    Sorted ascending, the k-th of m p-values is multiplied by (m - k + 1) and the running maximum
    kept: rejecting where adjusted p < alpha controls the family-wise error rate at alpha."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    m = len(finite)
    if not m:
        return out
    order = finite[np.argsort(p[finite], kind="stable")]
    scaled = np.minimum(1.0, p[order] * (m - np.arange(m)))
    out[order] = np.maximum.accumulate(scaled)
    return out


def corrected_verdicts(n, mean_difference, adjusted, alpha: float) -> list[str]:
    """Each pair's verdict read against its Holm-adjusted p-value."""
    return [verdict(int(k), float(d), float(p), alpha) for k, d, p in zip(n, mean_difference, adjusted)]


@dataclass(frozen=True)
class TargetTest:
    n: int
    mean: float
    sd: float
    p_value: float  # H1: the mean is below the target
    passed: bool


def target_t_test(values, target: float, alpha: float = 0.01) -> TargetTest:
    """The speedrun rule: a one-sided one-sample t test that the mean of the seeds' losses is below
    ``target`` (scipy.stats.ttest_1samp, alternative='less'); passes when p < alpha."""
    data = np.asarray(values, dtype=float)
    data = data[np.isfinite(data)]
    n = len(data)
    mean = float(data.mean()) if n else float("nan")
    sd = float(data.std(ddof=1)) if n > 1 else float("nan")
    if n < 2:
        p = float("nan")
    elif sd == 0.0:
        p = 0.0 if mean < target else 1.0
    else:
        p = float(stats.ttest_1samp(data, target, alternative="less").pvalue)
    return TargetTest(n, mean, sd, p, bool(np.isfinite(p) and p < alpha))


@dataclass(frozen=True)
class ZRule:
    n: int
    mean: float
    statistic: float  # (target - mean) * sqrt(n)
    z: float  # statistic / sigma
    p_value: float  # one-sided normal tail of z
    passed: bool


def z_rule(values, target: float, sigma: float, margin: float) -> ZRule:
    """The known-sigma rule of the speedrun's optimization track: pass when
    ``(target - mean) * sqrt(n) >= margin``; with sigma known that is z = statistic / sigma >=
    margin / sigma (0.004 / 0.0013 = 3.08, one-sided p = 0.001)."""
    data = np.asarray(values, dtype=float)
    data = data[np.isfinite(data)]
    n = len(data)
    if not n:
        return ZRule(0, float("nan"), float("nan"), float("nan"), float("nan"), False)
    mean = float(data.mean())
    statistic = (target - mean) * math.sqrt(n)
    z = statistic / sigma
    return ZRule(n, mean, statistic, z, float(stats.norm.sf(z)), statistic >= margin)


def configuration_intervals(frame: pd.DataFrame, axes: list[str], value: str,
                            confidence: float = CONFIDENCE) -> pd.DataFrame:
    """One row per configuration (the ``axes`` columns): seeds, mean of ``value`` and its interval."""
    rows = []
    for key, group in frame.groupby(axes, dropna=False, sort=True):
        interval = t_interval(group[value], confidence)
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(axes, key)), "seeds": interval.n, "mean": interval.mean,
                     "low": interval.low, "high": interval.high})
    return pd.DataFrame(rows, columns=[*axes, "seeds", "mean", "low", "high"])


def one_axis_pairs(frame: pd.DataFrame, axes: list[str], value: str, seed: str = "seed",
                   confidence: float = CONFIDENCE, alpha: float = ALPHA) -> pd.DataFrame:
    """Every pair of configurations that differ in exactly one axis, compared over their common seeds."""
    configs = frame[axes].drop_duplicates().to_dict("records")
    rows = []
    for first, second in itertools.combinations(configs, 2):
        differing = [k for k in axes if not _same(first[k], second[k])]
        if len(differing) != 1:
            continue
        a = _by_seed(frame, first, axes, value, seed)
        b = _by_seed(frame, second, axes, value, seed)
        common = sorted(set(a.index) & set(b.index))
        result = paired_comparison(a[common].to_numpy(), b[common].to_numpy(), confidence, alpha)
        axis = differing[0]
        rows.append({"axis": axis, "a": first[axis], "b": second[axis],
                     "fixed": ", ".join(f"{k}={first[k]}" for k in axes if k != axis),
                     "seeds": result.n, "mean_difference": result.mean_difference, "low": result.low,
                     "high": result.high, "effect": result.effect, "p_value": result.p_value,
                     "verdict": result.verdict})
    return pd.DataFrame(rows, columns=["axis", "a", "b", "fixed", "seeds", "mean_difference", "low", "high",
                                       "effect", "p_value", "verdict"])


def _same(left, right) -> bool:
    return (pd.isna(left) and pd.isna(right)) if (_scalar_na(left) or _scalar_na(right)) else left == right


def _scalar_na(value) -> bool:
    return not isinstance(value, (list, tuple, dict)) and bool(pd.isna(value))


def _by_seed(frame: pd.DataFrame, config: dict, axes: list[str], value: str, seed: str) -> pd.Series:
    mask = np.ones(len(frame), dtype=bool)
    for key in axes:
        mask &= np.array([_same(v, config[key]) for v in frame[key]])
    rows = frame[mask]
    return pd.Series(rows[value].to_numpy(dtype=float), index=rows[seed].to_numpy()).groupby(level=0).mean()
