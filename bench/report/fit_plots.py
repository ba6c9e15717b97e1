"""PNG figures of the analysis: performance profiles, IsoFLOP curves and fits, hyperparameter transfer.
Drawn with matplotlib's Agg renderer and written atomically like ``plots.py``'s."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from bench.analysis.profiles import profile
from bench.analysis.scaling import IsoflopFit, Parametric, PowerLaw
from bench.report.plots import DPI, _palette, _save


def profile_figure(ratio: pd.DataFrame, r_max: float, title: str) -> Figure:
    fig = Figure(figsize=(7, 4.5), dpi=DPI, layout="constrained")
    axis = fig.subplots()
    taus = np.linspace(1.0, r_max, 601)
    rho = profile(ratio, taus)
    styles = ("-", "--", "-.", ":")  # algorithms with equal profiles (e.g. all at 0) stay visible
    for i, (color, algorithm) in enumerate(zip(_palette(len(rho.columns)), rho.columns)):
        axis.step(taus, rho[algorithm], where="post", color=color, label=str(algorithm),
                  linestyle=styles[i % len(styles)], linewidth=2.5 - 0.4 * (i % 4))
    axis.set_xlim(1.0, r_max)
    axis.set_ylim(-0.02, 1.02)
    axis.set_xlabel("tau (cost / fastest cost on the workload)")
    axis.set_ylabel("rho(tau): fraction of workloads within tau")
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=8)
    axis.set_title(title)
    return fig


def isoflop_figure(cells: pd.DataFrame, fits: dict[str, IsoflopFit], parametric: Parametric | None,
                   extrapolate: list[float], title: str) -> Figure:
    """IsoFLOP curves (parabolas and stars where ``vertex`` is fitted, rings round each budget's best run),
    and N_opt and D_opt against C with each method's power law and approach 3's dashed line."""
    fig = Figure(figsize=(14, 4.8), dpi=DPI, layout="constrained")
    curves, n_axis, d_axis = fig.subplots(1, 3)
    budgets = sorted(cells["budget"].unique())
    for color, budget in zip(_palette(len(budgets)), budgets):
        group = cells[cells["budget"] == budget]
        curves.scatter(group["n"], group["loss"], color=color, s=18, label=f"C = {budget:.3g}")
        best = group.loc[group["loss"].idxmin()]
        curves.scatter([best["n"]], [best["loss"]], s=110, facecolors="none", edgecolors=color, linewidths=1.5)
        if "vertex" in fits:
            vertex = fits["vertex"].n_vertices[list(fits["vertex"].budgets).index(budget)]
            if vertex.coefficients[0] > 0:
                grid = np.linspace(np.log(group["n"].min()) - 0.2, np.log(group["n"].max()) + 0.2, 100)
                curves.plot(np.exp(grid), np.polyval(vertex.coefficients, grid), color=color, linewidth=1)
            curves.plot([vertex.x_opt], [vertex.loss_opt], marker="*", markersize=12, color=color)
    curves.set_xscale("log")
    curves.set_xlabel("parameters N")
    curves.set_ylabel("final loss (nats/token)")
    shown = "parabola in ln N, * = vertex, o = best run" if "vertex" in fits else "o = best run"
    curves.set_title(f"IsoFLOP curves ({shown})")
    curves.legend(fontsize=7)
    _law_panel(n_axis, fits, "n", extrapolate, "N_opt", parametric and (lambda c: parametric.optimal(c)[0]))
    _law_panel(d_axis, fits, "d", extrapolate, "D_opt (tokens)", parametric and (lambda c: parametric.optimal(c)[1]))
    fig.suptitle(title)
    return fig


def _law_panel(axis, fits: dict[str, IsoflopFit], which: str, extrapolate: list[float], label: str,
               parametric) -> None:
    budgets = next(iter(fits.values())).budgets
    span = np.logspace(np.log10(min(budgets)) - 0.3, np.log10(max([*budgets, *extrapolate])) + 0.1, 200)
    for (method, fit), color, marker in zip(fits.items(), ("C0", "C2"), ("o", "s")):
        law: PowerLaw = fit.n_law if which == "n" else fit.d_law
        optima = [v.x_opt for v in (fit.n_vertices if which == "n" else fit.d_vertices)]
        axis.scatter(budgets, optima, color=color, marker=marker, zorder=3, s=22, label=f"{method} optima")
        axis.plot(span, law(span), color=color, label=f"{method}: {label} = {law.a:.3g} C^{law.b:.3f}")
        for budget in extrapolate:
            axis.plot([budget], [law(budget)], marker=marker, color="C3")
    if parametric:
        axis.plot(span, [parametric(c) for c in span], color="C1", linestyle="--", label="approach 3 L(N, D)")
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("compute budget C (training FLOPs)")
    axis.set_ylabel(label)
    axis.grid(True, alpha=0.3, which="both")
    axis.legend(fontsize=7)


def hparam_figure(cells: pd.DataFrame, best: pd.DataFrame, law: PowerLaw, x: str, y: str,
                  at: float | None, title: str) -> Figure:
    fig = Figure(figsize=(12, 4.8), dpi=DPI, layout="constrained")
    sweep, fit_axis = fig.subplots(1, 2)
    scales = sorted(cells[x].unique())
    for color, scale in zip(_palette(len(scales)), scales):
        group = cells[cells[x] == scale].sort_values(y)
        sweep.plot(group[y], group["loss"], marker="o", color=color, label=f"{x} = {scale:.3g}")
    sweep.set_xscale("log")
    sweep.set_xlabel(y)
    sweep.set_ylabel("loss (nats/token)")
    sweep.set_title(f"val loss vs {y} at each scale")
    sweep.grid(True, alpha=0.3, which="both")
    sweep.legend(fontsize=7)
    top = max([*best[x], at or 0])
    span = np.logspace(np.log10(best[x].min()) - 0.1, np.log10(top) + 0.1, 200)
    fit_axis.scatter(best[x], best[y], color="k", zorder=3, label=f"best {y} per scale")
    fit_axis.plot(span, law(span), color="C0", label=f"{y} = {law.a:.3g} {x}^{law.b:.3f}")
    if at:
        low, high = law.prediction_interval(at)
        fit_axis.errorbar([at], [law(at)], yerr=[[law(at) - low], [high - law(at)]] if np.isfinite(low) else None,
                          marker="o", color="C3", capsize=4, label=f"predicted at {at:.3g}")
    fit_axis.set_xscale("log")
    fit_axis.set_yscale("log")
    fit_axis.set_xlabel(x)
    fit_axis.set_ylabel(y)
    fit_axis.grid(True, alpha=0.3, which="both")
    fit_axis.legend(fontsize=7)
    fig.suptitle(title)
    return fig


def save(fig: Figure, path: str | Path) -> Path:
    return _save(fig, Path(path))
