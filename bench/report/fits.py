"""`bench fit`: scaling-law and hyperparameter-transfer fits over a matrix's finished cells, as text
tables plus a PNG. The arithmetic lives in ``bench.analysis.scaling``; this module only turns
summaries into the frames it takes and its results into tables."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from bench.analysis import scaling
from bench.errors import BenchError
from bench.report.render import render

# --x choices: summary field for each.
SCALES = {"params": "params_total", "non_embedding_params": "params_non_embedding", "tokens": "train_tokens",
          "flops": "train_flops"}
BUDGET_SPREAD = 1.25  # cells whose training FLOPs lie within this factor share an inferred budget
LOSS_NOTE = "loss = the cell's best validation loss (nats/token)"


def _g(value: float) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{value:.3g}"


def finished_cells(summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    cells = [s for s in summaries if s.get("status") == "ok" and s.get("best_val_loss") is not None]
    if not cells:
        raise BenchError("no finished cells to fit; run the matrix first (`bench run MATRIX`)")
    datasets = sorted({_dataset(s) for s in cells})
    if len(datasets) > 1:
        raise BenchError(f"the cells mix datasets ({', '.join(datasets)}) and one fit needs one; "
                         f"select one with --where dataset=...")
    return cells


def _dataset(summary: dict[str, Any]) -> str:
    config = summary.get("config") or {}
    tokenizer = summary.get("text_tokenizer")
    return f"{config.get('dataset')}" + (f" ({tokenizer} tokens)" if tokenizer else "")


def _declared_budget(summary: dict[str, Any]) -> float | None:
    config = summary.get("config") or {}
    value = config.get("max_flops") or (summary.get("budget") or {}).get("max_flops")
    return float(value) if value else None


def assign_budgets(summaries: list[dict[str, Any]]) -> tuple[list[float], str]:
    """Each cell's compute budget: its max_flops, else inferred by grouping training FLOPs."""
    declared = [_declared_budget(s) for s in summaries]
    if all(d is not None for d in declared):
        return [float(d or 0) for d in declared], "budget C = each cell's max_flops"
    flops = np.array([float(s.get("train_flops") or math.nan) for s in summaries])
    if not np.all(np.isfinite(flops)):
        raise BenchError("some cells have neither max_flops nor train_flops; rerun them with this bench")
    budgets = np.empty_like(flops)
    order = np.argsort(flops)
    start = 0
    for i in range(1, len(order) + 1):
        if i == len(order) or flops[order[i]] > BUDGET_SPREAD * flops[order[start]]:
            group = order[start:i]
            budgets[group] = flops[group].max()  # steps are floored, so the largest is closest to C
            start = i
    return budgets.tolist(), (f"budget C inferred: cells whose training FLOPs lie within {BUDGET_SPREAD:g}x of "
                              "each other share a budget, labelled by the largest (no max_flops in their config)")


@dataclass
class IsoflopReport:
    cells: pd.DataFrame
    fit: scaling.IsoflopFit
    parametric: scaling.Parametric | None
    parametric_error: str | None
    text: str


def isoflop_cells(summaries: list[dict[str, Any]], size: str) -> tuple[pd.DataFrame, str]:
    cells = finished_cells(summaries)
    budgets, how = assign_budgets(cells)
    frame = pd.DataFrame({"budget": budgets, "n": [float(s[SCALES[size]]) for s in cells],
                          "d": [float(s["train_tokens"]) for s in cells],
                          "loss": [float(s["best_val_loss"]) for s in cells],
                          "name": [s.get("name") for s in cells]})
    return frame, how


def isoflop_report(summaries: list[dict[str, Any]], *, matrix: str, size: str, extrapolate: list[float],
                   n_boot: int, seed: int) -> IsoflopReport:
    cells, how = isoflop_cells(summaries, size)
    fit = scaling.isoflop_fit(cells, n_boot=n_boot, seed=seed)
    try:
        parametric, problem = scaling.fit_parametric(cells["n"], cells["d"], cells["loss"]), None
    except BenchError as exc:
        parametric, problem = None, str(exc)
    text = "\n\n".join([
        f"IsoFLOP fit of {matrix!r}: {len(cells)} finished cells, {len(fit.budgets)} budgets, dataset "
        f"{_dataset(summaries[0]) if summaries else '?'}; N = {SCALES[size]}, D = training tokens, {LOSS_NOTE}; "
        f"{how}.",
        render(_budget_table(cells, fit), "github"),
        _laws_text(fit, n_boot),
        _parametric_text(parametric, problem),
        render(_extrapolation_table(fit, parametric, extrapolate), "github"),
    ])
    return IsoflopReport(cells, fit, parametric, problem, text)


def _budget_table(cells: pd.DataFrame, fit: scaling.IsoflopFit) -> pd.DataFrame:
    rows = []
    for budget, nv, dv in zip(fit.budgets, fit.n_vertices, fit.d_vertices):
        group = cells[cells["budget"] == budget]
        best = group.loc[group["loss"].idxmin()]
        rows.append({"Budget C (FLOPs)": _g(budget), "Sizes": len(group), "N_opt (vertex)": _g(nv.x_opt),
                     "D_opt (vertex)": _g(dv.x_opt), "Loss at vertex": f"{nv.loss_opt:.4f}",
                     "Best cell N": _g(best["n"]), "Best cell loss": f"{best['loss']:.4f}",
                     "Vertex inside sizes": _where(nv)})
    return pd.DataFrame(rows)


def _where(vertex: scaling.Vertex) -> str:
    if vertex.inside:
        return "yes"
    return "no minimum: best cell used" if vertex.coefficients[0] == 0 else "no (extrapolated)"


def _laws_text(fit: scaling.IsoflopFit, n_boot: int) -> str:
    lines = []
    for label, law, column in (("N_opt", fit.n_law, 1), ("D_opt", fit.d_law, 3)):
        low, high = fit.bootstrap_interval(column)
        lines.append(f"{label} = {law.a:.3g} x C^{law.b:.3f}   exponent 95% CI: bootstrap [{low:.3f}, {high:.3f}], "
                     f"t [{law.b_low:.3f}, {law.b_high:.3f}]   (R^2 {law.r2:.3f})")
    lines.append(f"Least squares in log-log space over the {len(fit.budgets)} budget minima; bootstrap: "
                 f"{len(fit.bootstrap)} of {n_boot} resamples of cells within each budget, refitted; t: Student-t "
                 f"on the regression slope ({len(fit.budgets) - 2} degrees of freedom).")
    return "\n".join(lines)


def _parametric_text(fit: scaling.Parametric | None, problem: str | None) -> str:
    if fit is None:
        return f"Parametric L(N, D) fit skipped: {problem}"
    return (f"Parametric (Chinchilla approach 3): L(N, D) = {fit.E:.3f} + {fit.A:.4g} / N^{fit.alpha:.3f} + "
            f"{fit.B:.4g} / D^{fit.beta:.3f}\n"
            f"Huber loss (delta {scaling.HUBER_DELTA:g}) on log-loss, L-BFGS-B from the {fit.starts} best of "
            f"{fit.grid_points} grid points (Hoffmann et al.'s grid), "
            f"best objective {fit.objective:.3g}; its compute-optimal "
            f"N_opt ~ C^{fit.beta / (fit.alpha + fit.beta):.3f}, "
            f"D_opt ~ C^{fit.alpha / (fit.alpha + fit.beta):.3f} under C = 6ND.")


def _extrapolation_table(fit: scaling.IsoflopFit, parametric: scaling.Parametric | None,
                         budgets: list[float]) -> pd.DataFrame:
    rows = []
    for budget in budgets:
        n, n_low, n_high = fit.extrapolate(budget, "n")
        d, d_low, d_high = fit.extrapolate(budget, "d")
        row = {"Budget C (FLOPs)": _g(budget), "N_opt (IsoFLOP)": _g(n), "N_opt 95% CI": f"{_g(n_low)} - {_g(n_high)}",
               "D_opt (IsoFLOP)": _g(d), "D_opt 95% CI": f"{_g(d_low)} - {_g(d_high)}"}
        if parametric is not None:
            pn, pd_ = parametric.optimal(budget)
            row.update({"N_opt (parametric)": _g(pn), "D_opt (parametric)": _g(pd_),
                        "Loss (parametric)": f"{float(parametric.loss(pn, pd_)):.3f}"})
        rows.append(row)
    return pd.DataFrame(rows)


@dataclass
class HparamReport:
    cells: pd.DataFrame
    best: pd.DataFrame
    law: scaling.PowerLaw
    text: str


def hparam_report(summaries: list[dict[str, Any]], *, matrix: str, x: str, y: str, at: float | None) -> HparamReport:
    if x not in SCALES:
        raise BenchError(f"--x {x!r} is not a scale; use one of {', '.join(SCALES)}")
    cells = finished_cells(summaries)
    values = [(s.get("config") or {}).get(y) for s in cells]
    if all(v is None for v in values):
        raise BenchError(f"--y {y!r} is not a config key of these cells; use a searched hyperparameter such as lr")
    if pd.to_numeric(pd.Series(values), errors="coerce").isna().all():
        raise BenchError(f"--y {y!r} is not a number in these cells; a power law needs a numeric hyperparameter")
    frame = pd.DataFrame({"x": [float(s.get(SCALES[x]) or math.nan) for s in cells],
                          "y": pd.to_numeric(pd.Series(values), errors="coerce"),
                          "loss": [float(s["best_val_loss"]) for s in cells]}).rename(columns={"x": x, "y": y})
    best, law = scaling.fit_hparam(frame, x, y)
    table = pd.DataFrame({x: [_g(v) for v in best[x]], f"best {y}": [_g(v) for v in best[y]],
                          "best val loss": [f"{v:.4f}" for v in best["loss"]], "cells": best["cells"],
                          f"fitted {y}": [_g(float(law(v))) for v in best[x]]})
    lines = [f"{y} vs {x} in {matrix!r}: the best {y} (lowest best val loss) at each of {len(best)} scales, "
             f"from {len(cells)} finished cells; {LOSS_NOTE}.",
             render(table, "github"),
             f"{y} = {law.a:.4g} x {x}^{law.b:.3f}   exponent 95% CI (Student-t, {law.n - 2} dof): "
             f"[{law.b_low:.3f}, {law.b_high:.3f}]   (R^2 {law.r2:.3f}; least squares in log-log space)"]
    if at:
        low, high = law.prediction_interval(at)
        lines.append(f"predicted {y} at {x} = {at:.4g}: {float(law(at)):.4g}   95% prediction interval "
                     f"[{_g(low)}, {_g(high)}]")
    return HparamReport(frame, best, law, "\n\n".join(lines))
