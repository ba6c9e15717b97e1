"""Scaling-law fits: power laws, the CS336 IsoFLOP method, Chinchilla's parametric L(N, D) and
hyperparameter-vs-scale transfer. Inputs are arrays or frames of finished cells; nothing is read
or written here.

- Power laws y = a x^b are straight lines in log-log space, fitted by least squares
  (``scipy.stats.linregress``); intervals on b are Student-t with n - 2 degrees of freedom.
- IsoFLOP: for each budget C, N_opt(C) and D_opt(C) by one of two methods: ``vertex``, a parabola of
  final loss in ln N (``numpy.polyfit``) and its vertex, and one in ln D (Hoffmann et al.'s approach
  2); or ``min``, the lowest-loss run of the budget (the CS336 assignment-3 handout's method). Then
  N_opt = a C^b and D_opt = a' C^b'. Bootstrap intervals resample cells within each budget and refit
  everything; all resamples are refitted at once with array arithmetic (``_bootstrap``).
- Parametric: L(N, D) = E + A / N^alpha + B / D^beta fitted as Hoffmann et al. (2022, approach 3)
  do: Huber loss (delta 1e-3) between log L and log-sum-exp of the three terms' logs, minimised
  with L-BFGS (``scipy.optimize.minimize``) from the best points of their initialisation grid
  (the objective is evaluated on all 4,500 grid points, L-BFGS runs from the lowest 64), keeping
  the best result.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import optimize, special, stats
from threadpoolctl import threadpool_limits

from bench.errors import BenchError

CONFIDENCE = 0.95
HUBER_DELTA = 1e-3
BUDGET_SPREAD = 1.25  # runs whose training FLOPs lie within this factor share an inferred budget


@dataclass(frozen=True)
class PowerLaw:
    """y = a x^b fitted in log-log space, with what a prediction interval needs."""

    a: float
    b: float
    b_low: float
    b_high: float
    r2: float
    n: int
    mean_log_x: float
    sxx: float
    residual_sd: float

    def __call__(self, x):
        return self.a * np.asarray(x, dtype=float) ** self.b

    def prediction_interval(self, x: float, confidence: float = CONFIDENCE) -> tuple[float, float]:
        """Interval for a new observation at x (Student-t on the log scale); NaN with 2 points."""
        dof = self.n - 2
        if dof < 1:
            return float("nan"), float("nan")
        t = stats.t.ppf((1 + confidence) / 2, dof)
        spread = self.residual_sd * math.sqrt(1 + 1 / self.n + (math.log(x) - self.mean_log_x) ** 2 / self.sxx)
        centre = math.log(self(x))
        return math.exp(centre - t * spread), math.exp(centre + t * spread)


def fit_power_law(x, y, confidence: float = CONFIDENCE) -> PowerLaw:
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 2 or len(np.unique(x)) < 2 or np.any(x <= 0) or np.any(y <= 0):
        raise BenchError("a power law needs at least two distinct positive x values and positive y; "
                         f"got x={x.tolist()}")
    lx, ly = np.log(x), np.log(y)
    fit = stats.linregress(lx, ly)
    dof = len(x) - 2
    half = stats.t.ppf((1 + confidence) / 2, dof) * fit.stderr if dof >= 1 else float("nan")
    residuals = ly - (fit.intercept + fit.slope * lx)
    sd = math.sqrt(float(residuals @ residuals) / dof) if dof >= 1 else float("nan")
    return PowerLaw(math.exp(fit.intercept), float(fit.slope), float(fit.slope - half), float(fit.slope + half),
                    float(fit.rvalue ** 2), len(x), float(lx.mean()), float(((lx - lx.mean()) ** 2).sum()), sd)


@dataclass(frozen=True)
class Vertex:
    """The minimum of a parabola fitted to loss against ln(x)."""

    x_opt: float
    loss_opt: float
    coefficients: tuple[float, float, float]  # loss = c0 ln(x)^2 + c1 ln(x) + c2
    inside: bool  # False: the vertex is an extrapolation beyond the sizes tried


def parabola_minimum(x, loss) -> Vertex:
    x, loss = np.asarray(x, dtype=float), np.asarray(loss, dtype=float)
    if len(np.unique(x)) < 3:
        raise BenchError(f"a parabola needs at least three distinct sizes, got {len(np.unique(x))}")
    c = np.polyfit(np.log(x), loss, 2)
    if c[0] <= 0:
        raise BenchError("the losses do not bend upward (no minimum inside the sizes tried); "
                         "add smaller and larger models around the best one")
    lx = -c[1] / (2 * c[0])
    return Vertex(math.exp(lx), float(np.polyval(c, lx)), (float(c[0]), float(c[1]), float(c[2])),
                  bool(x.min() <= math.exp(lx) <= x.max()))


METHODS = ("vertex", "min")


@dataclass
class IsoflopFit:
    budgets: np.ndarray
    n_vertices: list[Vertex]
    d_vertices: list[Vertex]
    n_law: PowerLaw
    d_law: PowerLaw
    bootstrap: np.ndarray = field(default_factory=lambda: np.empty((0, 4)))  # rows: ln a, b, ln a', b'
    confidence: float = CONFIDENCE
    method: str = "vertex"

    def bootstrap_interval(self, column: int) -> tuple[float, float]:
        if not len(self.bootstrap):
            return float("nan"), float("nan")
        tail = (1 - self.confidence) / 2 * 100
        low, high = np.percentile(self.bootstrap[:, column], [tail, 100 - tail])
        return float(low), float(high)

    def extrapolate(self, budget: float, which: str) -> tuple[float, float, float]:
        """N_opt or D_opt at ``budget``: the fit's value and the bootstrap percentile interval."""
        law, col = (self.n_law, 0) if which == "n" else (self.d_law, 2)
        value = float(law(budget))
        if not len(self.bootstrap):
            return value, float("nan"), float("nan")
        samples = np.exp(self.bootstrap[:, col] + self.bootstrap[:, col + 1] * math.log(budget))
        tail = (1 - self.confidence) / 2 * 100
        low, high = np.percentile(samples, [tail, 100 - tail])
        return value, float(low), float(high)


def group_budgets(flops) -> np.ndarray:
    """Each run's compute budget when none was declared: runs sorted by training FLOPs, a new budget
    starting wherever one exceeds BUDGET_SPREAD x the first of its budget; labelled by the largest
    (steps are floored, so the largest is closest to the budget that was aimed at)."""
    flops = np.asarray(flops, dtype=float)
    budgets = np.empty_like(flops)
    order = np.argsort(flops)
    start = 0
    for i in range(1, len(order) + 1):
        if i == len(order) or flops[order[i]] > BUDGET_SPREAD * flops[order[start]]:
            group = order[start:i]
            budgets[group] = flops[group].max()
            start = i
    return budgets


def check_grid(frame: pd.DataFrame, group: str = "budget", size: str = "n") -> None:
    """At least three budgets, each with at least three distinct sizes; one line otherwise."""
    budgets = frame[group].nunique()
    if budgets < 3:
        raise BenchError(f"an IsoFLOP fit needs at least three compute budgets with finished cells, got {budgets}")
    for budget, cells in frame.groupby(group):
        if cells[size].nunique() < 3:
            raise BenchError(f"budget {budget:.3g} FLOPs has {cells[size].nunique()} model size(s) with finished "
                             "cells; an IsoFLOP parabola needs at least three")


def isoflop_fit(frame: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0,
                confidence: float = CONFIDENCE, method: str = "vertex") -> IsoflopFit:
    """``frame``: one row per finished cell with columns budget (FLOPs), n (params), d (tokens), loss.
    ``method``: ``vertex`` (parabola minimum) or ``min`` (lowest-loss cell) per budget."""
    if method not in METHODS:
        raise BenchError(f"unknown IsoFLOP method {method!r}; use one of {', '.join(METHODS)}")
    check_grid(frame)
    fit = _isoflop_once(frame, method)
    fit.confidence = confidence
    fit.bootstrap = _bootstrap(frame, n_boot, np.random.default_rng(seed), method)
    return fit


def budget_optimum(x, loss) -> Vertex:
    """The parabola's vertex, or, when the losses do not bend upward, the best cell itself
    (marked ``inside=False`` and with zero coefficients, so it shows as a fallback)."""
    try:
        return parabola_minimum(x, loss)
    except BenchError:
        x, loss = np.asarray(x, dtype=float), np.asarray(loss, dtype=float)
        if len(np.unique(x)) < 3:
            raise
        best = int(np.argmin(loss))
        return Vertex(float(x[best]), float(loss[best]), (0.0, 0.0, float(loss[best])), False)


def best_cell(x, loss) -> Vertex:
    """The lowest-loss cell as the budget's optimum (``min`` method); always inside the sizes tried."""
    x, loss = np.asarray(x, dtype=float), np.asarray(loss, dtype=float)
    best = int(np.argmin(loss))
    return Vertex(float(x[best]), float(loss[best]), (0.0, 0.0, float(loss[best])), True)


def _isoflop_once(frame: pd.DataFrame, method: str = "vertex") -> IsoflopFit:
    optimum = budget_optimum if method == "vertex" else best_cell
    budgets, n_vertices, d_vertices = [], [], []
    for budget, cells in frame.groupby("budget", sort=True):
        budgets.append(float(budget))
        n_vertices.append(optimum(cells["n"], cells["loss"]))
        d_vertices.append(optimum(cells["d"], cells["loss"]))
    budgets_arr = np.asarray(budgets)
    return IsoflopFit(budgets_arr, n_vertices, d_vertices,
                      fit_power_law(budgets_arr, [v.x_opt for v in n_vertices]),
                      fit_power_law(budgets_arr, [v.x_opt for v in d_vertices]), method=method)


def resample_counts(sizes: list[int], draws: int, rng: np.random.Generator) -> list[np.ndarray]:
    """For each budget of ``sizes[g]`` cells, ``draws`` resamples with replacement as counts:
    an integer array (draws, sizes[g]) saying how often each cell was drawn."""
    counts = []
    for k in sizes:
        picks = rng.integers(0, k, (draws, k))
        counts.append((picks[:, :, None] == np.arange(k)).sum(axis=1))
    return counts


def counts_within_budgets(budgets, draws: int, rng: np.random.Generator) -> np.ndarray:
    """Resamples of whole cell lists, within each budget, as counts (draws, cells) in row order."""
    budgets = np.asarray(budgets, dtype=float)
    out = np.zeros((draws, len(budgets)), dtype=int)
    groups = [np.flatnonzero(budgets == b) for b in np.unique(budgets)]
    for rows, counts in zip(groups, resample_counts([len(g) for g in groups], draws, rng)):
        out[:, rows] = counts
    return out


def _bootstrap(frame: pd.DataFrame, n_boot: int, rng: np.random.Generator, method: str = "vertex") -> np.ndarray:
    """Resample cells with replacement within each budget and refit, all resamples at once.

    A resample is the vector of how often each cell was drawn, so a parabola refit is a weighted
    least-squares solve (its normal equations, batched) and the power-law refit a batched
    regression slope. Resamples that leave a budget with fewer than three distinct sizes are
    redrawn (up to 5 x n_boot draws), as before; a parabola that does not bend upward falls back to
    the resample's best cell, as ``budget_optimum`` does."""
    groups = [cells for _, cells in frame.groupby("budget", sort=True)]
    ln_c = np.log([float(g["budget"].iloc[0]) for g in groups])
    kept: list[np.ndarray] = []
    drawn = 0
    while sum(len(k) for k in kept) < n_boot and drawn < 5 * n_boot:
        draws = min(5 * n_boot - drawn, max(n_boot - sum(len(k) for k in kept), 64))
        drawn += draws
        counts = resample_counts([len(g) for g in groups], draws, rng)
        ok = np.ones(draws, dtype=bool)
        ln_n = np.empty((draws, len(groups)))
        ln_d = np.empty((draws, len(groups)))
        for j, (cells, c) in enumerate(zip(groups, counts)):
            ok &= _distinct_drawn(cells["n"].to_numpy(float), c) >= 3
            loss = cells["loss"].to_numpy(float)
            ln_n[:, j] = _batched_optimum(np.log(cells["n"].to_numpy(float)), loss, c, method)
            ln_d[:, j] = _batched_optimum(np.log(cells["d"].to_numpy(float)), loss, c, method)
        kept.append(np.column_stack([*_batched_line(ln_c, ln_n[ok]), *_batched_line(ln_c, ln_d[ok])]))
    return np.concatenate(kept)[:n_boot] if kept else np.empty((0, 4))


def _distinct_drawn(x: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """How many distinct values of ``x`` each resample (row of ``counts``) holds."""
    _, size_of = np.unique(x, return_inverse=True)
    per_size = counts @ (size_of[:, None] == np.arange(size_of.max() + 1))
    return (per_size > 0).sum(axis=1)


def _batched_optimum(lx: np.ndarray, loss: np.ndarray, counts: np.ndarray, method: str) -> np.ndarray:
    """ln x at each resample's optimum: the count-weighted parabola's vertex (``vertex``; the best drawn
    cell where it does not bend upward) or the best drawn cell (``min``)."""
    drawn_loss = np.where(counts > 0, loss, np.inf)
    best = lx[np.argmin(drawn_loss, axis=1)]
    if method == "min":
        return best
    shift = lx.mean()  # centred powers keep the normal equations well conditioned
    powers = (lx - shift)[None, :] ** np.arange(5)[:, None]  # (5, cells)
    s = counts @ powers.T  # (draws, 5): sum of w x^p
    t = counts @ (powers[:3] * loss).T  # (draws, 3): sum of w x^p loss
    gram = np.stack([s[:, [4, 3, 2]], s[:, [3, 2, 1]], s[:, [2, 1, 0]]], axis=1)
    gram = gram + np.eye(3) * 1e-12 * np.abs(gram).max(axis=(1, 2), keepdims=True)  # rows with < 3 sizes are dropped
    c = np.linalg.solve(gram, t[:, [2, 1, 0], None])[:, :, 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        vertex = shift - c[:, 1] / (2 * c[:, 0])
    return np.where(c[:, 0] > 0, vertex, best)


def _batched_line(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Intercepts and slopes of least-squares lines y[i] ~ x, one per row of ``y``."""
    xc = x - x.mean()
    slope = (y - y.mean(axis=1, keepdims=True)) @ xc / (xc @ xc)
    return y.mean(axis=1) - slope * x.mean(), slope


@dataclass(frozen=True)
class Parametric:
    """L(N, D) = E + A / N^alpha + B / D^beta."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    objective: float
    starts: int  # L-BFGS runs
    grid_points: int  # grid points screened for them

    def loss(self, n, d):
        n, d = np.asarray(n, dtype=float), np.asarray(d, dtype=float)
        return self.E + self.A / n ** self.alpha + self.B / d ** self.beta

    def optimal(self, budget: float) -> tuple[float, float]:
        """(N_opt, D_opt) minimising L under C = 6 N D (Hoffmann et al., eq. 4)."""
        s = self.alpha + self.beta
        g = (self.alpha * self.A / (self.beta * self.B)) ** (1 / s)
        return g * (budget / 6) ** (self.beta / s), (budget / 6) ** (self.alpha / s) / g


# Hoffmann et al.'s grid of initialisations (4,500 points); L-BFGS runs from the STARTS best of them.
DEFAULT_GRID = {"alpha": (0.0, 0.5, 1.0, 1.5, 2.0), "beta": (0.0, 0.5, 1.0, 1.5, 2.0),
                "e": (-1.0, -0.5, 0.0, 0.5, 1.0), "a": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
                "b": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0)}
STARTS = 64


def _objective(theta: np.ndarray, ln_n: np.ndarray, ln_d: np.ndarray, ln_loss: np.ndarray,
               delta: float) -> tuple[float, np.ndarray]:
    a, b, e, alpha, beta = theta
    terms = np.stack([a - alpha * ln_n, b - beta * ln_d, np.full_like(ln_n, e)])
    predicted = _logsumexp(terms)
    r = predicted - ln_loss
    weights = np.exp(terms - predicted)  # d predicted / d term
    dr = np.clip(r, -delta, delta)  # Huber's derivative
    grad = np.array([dr @ weights[0], dr @ weights[1], dr @ weights[2],
                     -(dr * weights[0]) @ ln_n, -(dr * weights[1]) @ ln_d])
    return float(special.huber(delta, r).sum()), grad


def _grid_objective(points: np.ndarray, ln_n: np.ndarray, ln_d: np.ndarray, ln_loss: np.ndarray,
                    delta: float) -> np.ndarray:
    """The Huber objective at every grid point at once (rows of ``points``: a, b, e, alpha, beta)."""
    a, b, e, alpha, beta = (points[:, i:i + 1] for i in range(5))
    terms = np.stack([a - alpha * ln_n, b - beta * ln_d, np.broadcast_to(e, (len(points), len(ln_n)))])
    return special.huber(delta, _logsumexp(terms) - ln_loss).sum(axis=1)


def _logsumexp(terms: np.ndarray) -> np.ndarray:
    """log(sum(exp(terms), axis 0)), stable; plain numpy because scipy's version costs ~1 ms a call
    and L-BFGS calls it thousands of times."""
    top = terms.max(axis=0)
    return top + np.log(np.exp(terms - top).sum(axis=0))


def fit_parametric(n, d, loss, grid: dict[str, tuple[float, ...]] | None = None, starts: int = STARTS,
                   delta: float = HUBER_DELTA) -> Parametric:
    """Chinchilla's approach 3 on finished cells (N params, D tokens, final loss in nats): the objective
    is evaluated on the whole grid, and L-BFGS-B runs from its ``starts`` lowest points."""
    n, d, loss = (np.asarray(v, dtype=float) for v in (n, d, loss))
    if len(loss) < 5:
        raise BenchError(f"the parametric L(N, D) fit has 5 constants and needs at least 5 cells, got {len(loss)}")
    grid = grid or DEFAULT_GRID
    args = (np.log(n), np.log(d), np.log(loss), delta)
    points = np.array(list(itertools.product(grid["a"], grid["b"], grid["e"], grid["alpha"], grid["beta"])))
    chosen = points[np.argsort(_grid_objective(points, *args), kind="stable")[:starts]]
    best = None
    # L-BFGS-B's 5x5 LAPACK calls run several times slower when OpenBLAS spreads them over threads.
    with threadpool_limits(limits=1, user_api="blas"):
        results = [optimize.minimize(_objective, start, args=args, jac=True, method="L-BFGS-B") for start in chosen]
    for result in results:
        if np.isfinite(result.fun) and (best is None or result.fun < best.fun):
            best = result
    if best is None:
        raise BenchError("the parametric L(N, D) fit found no finite optimum from any start; check the losses")
    a, b, e, alpha, beta = best.x
    return Parametric(math.exp(e), math.exp(a), math.exp(b), float(alpha), float(beta), float(best.fun),
                      len(chosen), len(points))


def best_per_scale(frame: pd.DataFrame, x: str, y: str, loss: str = "loss") -> pd.DataFrame:
    """At each distinct x, the y of the cell with the lowest loss (and how many cells competed)."""
    rows = []
    for value, cells in frame.dropna(subset=[x, y, loss]).groupby(x, sort=True):
        winner = cells.loc[cells[loss].idxmin()]
        rows.append({x: value, y: winner[y], loss: winner[loss], "cells": len(cells)})
    return pd.DataFrame(rows, columns=[x, y, loss, "cells"])


def fit_hparam(frame: pd.DataFrame, x: str, y: str, loss: str = "loss",
               confidence: float = CONFIDENCE) -> tuple[pd.DataFrame, PowerLaw]:
    best = best_per_scale(frame, x, y, loss)
    if len(best) < 3:
        raise BenchError(f"fitting {y} against {x} needs finished cells at three or more distinct {x} values, "
                         f"got {len(best)}")
    return best, fit_power_law(best[x], best[y], confidence)
