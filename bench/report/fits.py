"""`bench fit`: scaling-law and hyperparameter-transfer fits over a matrix's finished cells, as text
tables plus a PNG. The arithmetic lives in ``bench.analysis.scaling``; this module only turns
summaries into the frames it takes and its results into tables."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from bench.analysis import approach3, holdout, scaling
from bench.errors import BenchError
from bench.report.render import render

# --x choices: summary field for each.
SCALES = {"params": "params_total", "non_embedding_params": "params_non_embedding", "tokens": "train_tokens",
          "flops": "train_flops"}
BUDGET_SPREAD = scaling.BUDGET_SPREAD
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
    budgets = scaling.group_budgets(flops)
    return budgets.tolist(), (f"budget C inferred: cells whose training FLOPs lie within {BUDGET_SPREAD:g}x of "
                              "each other share a budget, labelled by the largest (no max_flops in their config)")


@dataclass
class IsoflopReport:
    cells: pd.DataFrame
    fits: dict[str, scaling.IsoflopFit]  # method -> fit, in the order shown
    parametric: approach3.Approach3 | None
    parametric_samples: np.ndarray  # bootstrap rows of E, A, B, alpha, beta
    parametric_error: str | None
    holdout: list[holdout.HeldOut] | None
    text: str

    @property
    def fit(self) -> scaling.IsoflopFit:
        return next(iter(self.fits.values()))


def isoflop_cells(summaries: list[dict[str, Any]], size: str) -> tuple[pd.DataFrame, str]:
    cells = finished_cells(summaries)
    budgets, how = assign_budgets(cells)
    frame = pd.DataFrame({"budget": budgets, "n": [float(s[SCALES[size]]) for s in cells],
                          "d": [float(s["train_tokens"]) for s in cells],
                          "loss": [float(s["best_val_loss"]) for s in cells],
                          "name": [s.get("name") for s in cells]})
    return frame, how


def isoflop_report(summaries: list[dict[str, Any]], *, matrix: str, size: str, extrapolate: list[float],
                   n_boot: int, seed: int, methods: tuple[str, ...] = scaling.METHODS) -> IsoflopReport:
    cells, how = isoflop_cells(summaries, size)
    header = (f"IsoFLOP fit of {matrix!r}: {len(cells)} finished cells, {cells['budget'].nunique()} budgets, "
              f"dataset "
              f"{_dataset(summaries[0]) if summaries else '?'}; N = {SCALES[size]}, D = training tokens, {LOSS_NOTE}; "
              f"{how}.")
    return isoflop_analysis(cells, header, extrapolate=extrapolate, n_boot=n_boot, seed=seed, methods=methods)


def isoflop_analysis(cells: pd.DataFrame, header: str, *, extrapolate: list[float], n_boot: int, seed: int,
                     methods: tuple[str, ...] = scaling.METHODS) -> IsoflopReport:
    """Every IsoFLOP method asked for, approach 3 with bootstrap intervals, leave-one-budget-out."""
    fits = {m: scaling.isoflop_fit(cells, n_boot=n_boot, seed=seed, method=m) for m in methods}
    samples = np.empty((0, 5))
    try:
        parametric, problem = approach3.fit(cells["n"], cells["d"], cells["loss"]), None
        counts = scaling.counts_within_budgets(cells["budget"], n_boot, np.random.default_rng(seed))
        samples = approach3.bootstrap(cells["n"], cells["d"], cells["loss"], counts, parametric.law)
    except BenchError as exc:
        parametric, problem = None, str(exc)
    held = holdout.leave_one_budget_out(cells, methods) if cells["budget"].nunique() >= 4 else None
    sections = [header, render(_budget_table(cells, fits), "github"), _laws_text(fits, n_boot, extrapolate),
                _parametric_text(parametric, samples, problem),
                render(_extrapolation_table(fits, parametric, samples, extrapolate), "github"),
                _holdout_text(held, methods, cells["budget"].nunique())]
    return IsoflopReport(cells, fits, parametric, samples, problem, held, "\n\n".join(sections))


def _budget_table(cells: pd.DataFrame, fits: dict[str, scaling.IsoflopFit]) -> pd.DataFrame:
    rows = []
    any_fit = next(iter(fits.values()))
    for i, budget in enumerate(any_fit.budgets):
        group = cells[cells["budget"] == budget]
        row: dict[str, Any] = {"Budget C (FLOPs)": _g(budget), "Sizes": len(group)}
        if "vertex" in fits:
            nv, dv = fits["vertex"].n_vertices[i], fits["vertex"].d_vertices[i]
            row.update({"N_opt (vertex)": _g(nv.x_opt), "D_opt (vertex)": _g(dv.x_opt),
                        "Loss at vertex": f"{nv.loss_opt:.4f}", "Vertex inside sizes": _where(nv)})
        best = group.loc[group["loss"].idxmin()]
        row.update({"N_opt (min: best run)": _g(best["n"]), "D_opt (min)": _g(best["d"]),
                    "Best run loss": f"{best['loss']:.4f}"})
        rows.append(row)
    return pd.DataFrame(rows)


def _where(vertex: scaling.Vertex) -> str:
    if vertex.inside:
        return "yes"
    return "no minimum: best cell used" if vertex.coefficients[0] == 0 else "no (extrapolated)"


METHOD_NAMES = {"vertex": "vertex (parabola minimum per budget, Hoffmann et al.'s approach 2)",
                "min": "min (lowest-loss run per budget, the CS336 handout's method)"}


def _laws_text(fits: dict[str, scaling.IsoflopFit], n_boot: int, extrapolate: list[float]) -> str:
    lines = []
    for method, fit in fits.items():
        lines.append(f"Method {METHOD_NAMES[method]}:")
        for label, law, column in (("N_opt", fit.n_law, 1), ("D_opt", fit.d_law, 3)):
            low, high = fit.bootstrap_interval(column)
            lines.append(f"  {label} = {law.a:.3g} x C^{law.b:.3f}   exponent 95% CI: bootstrap "
                         f"[{low:.3f}, {high:.3f}], t [{law.b_low:.3f}, {law.b_high:.3f}]   (R^2 {law.r2:.3f})")
    fit = next(iter(fits.values()))
    lines.append(f"Least squares in log-log space over the {len(fit.budgets)} budget optima; bootstrap: "
                 f"{len(fit.bootstrap)} of {n_boot} resamples of cells within each budget, refitted; t: Student-t "
                 f"on the regression slope ({len(fit.budgets) - 2} degrees of freedom).")
    if len(fits) == 2 and extrapolate:
        vertex, best = fits["vertex"], fits["min"]
        at = ", ".join(f"at C = {c:.3g} vertex {_g(vertex.n_law(c))} vs min {_g(best.n_law(c))} "
                       f"(vertex / min = {float(vertex.n_law(c) / best.n_law(c)):.2f})" for c in extrapolate)
        lines.append(f"Difference: the N_opt exponent is {vertex.n_law.b:.3f} by vertex and {best.n_law.b:.3f} by min "
                     f"({vertex.n_law.b - best.n_law.b:+.3f}); {at}. The min method can only pick a size that was "
                     f"run, so its optima move in steps of the size grid; the vertex interpolates between sizes but is "
                     f"biased when the sizes are not centred on the optimum.")
    return "\n".join(lines)


def _ci(values: np.ndarray) -> str:
    low, high = approach3.interval(values)
    return f"[{_g(low)}, {_g(high)}]"


def _parametric_text(fit: approach3.Approach3 | None, samples: np.ndarray, problem: str | None) -> str:
    if fit is None:
        return f"Parametric L(N, D) fit skipped: {problem}"
    law = fit.law
    names = ("E", "A", "B", "alpha", "beta")
    values = (law.E, law.A, law.B, law.alpha, law.beta)
    table = pd.DataFrame({"Constant": names, "Value": [f"{v:.4g}" for v in values],
                          "95% CI (bootstrap)": [_ci(samples[:, i]) for i in range(5)]})
    s = law.alpha + law.beta
    return (f"Parametric (Chinchilla approach 3, variable projection): L(N, D) = {law.E:.4g} + {law.A:.4g} / "
            f"N^{law.alpha:.4f} + {law.B:.4g} / D^{law.beta:.4f}\n"
            f"For each exponent pair (alpha, beta), E, A, B >= 0 are solved exactly (Huber regression, delta "
            f"{fit.delta:g}, on the loss itself as VPNLS does; Hoffmann et al. took it on log-loss); the exponents "
            f"are searched over a {int(math.sqrt(fit.grid_points))} x {int(math.sqrt(fit.grid_points))} grid on "
            f"[{approach3.EXPONENT_BOUNDS[0]:g}, {approach3.EXPONENT_BOUNDS[1]:g}], then by L-BFGS-B; objective "
            f"{law.objective:.3g} (mean Huber loss). Compute-optimal N_opt ~ C^{law.beta / s:.3f}, "
            f"D_opt ~ C^{law.alpha / s:.3f} under C = 6ND.\n"
            f"Intervals: {len(samples)} bootstrap resamples of cells within each budget, each refitted (exponents by "
            f"compass search from this fit, E, A, B exactly).\n\n" + render(table, "github"))


def _extrapolation_table(fits: dict[str, scaling.IsoflopFit], parametric: approach3.Approach3 | None,
                         samples: np.ndarray, budgets: list[float]) -> pd.DataFrame:
    rows = []
    for budget in budgets:
        row = {"Budget C (FLOPs)": _g(budget)}
        for method, fit in fits.items():
            n, n_low, n_high = fit.extrapolate(budget, "n")
            d, d_low, d_high = fit.extrapolate(budget, "d")
            row[f"N_opt ({method}) [95% CI]"] = f"{_g(n)} [{_g(n_low)}, {_g(n_high)}]"
            row[f"D_opt ({method}) [95% CI]"] = f"{_g(d)} [{_g(d_low)}, {_g(d_high)}]"
        if parametric is not None:
            pn, pd_ = parametric.law.optimal(budget)
            sn, sd, sl = approach3.optimal(samples, budget)
            row.update({"N_opt (approach 3) [95% CI]": f"{_g(pn)} {_ci(sn)}",
                        "D_opt (approach 3) [95% CI]": f"{_g(pd_)} {_ci(sd)}",
                        "Loss (approach 3) [95% CI]": f"{float(parametric.law.loss(pn, pd_)):.4g} {_ci(sl)}"})
        rows.append(row)
    return pd.DataFrame(rows)


def _pct(value: float) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{100 * value:+.1f}%"


def _holdout_text(held: list[holdout.HeldOut] | None, methods: tuple[str, ...], budgets: int) -> str:
    if held is None:
        return (f"Leave-one-budget-out extrapolation skipped: it needs at least four budgets (three to refit on), "
                f"got {budgets}.")
    laws = [*methods, "approach3"]
    rows = []
    for h in held:
        row: dict[str, Any] = {"Held-out C": _g(h.budget) + (" (largest)" if h.largest else "")}
        for method in methods:
            row[f"N_opt observed ({method})"] = _g(h.observed[method])
        for law in laws:
            row[f"N_opt error ({law} law)"] = _pct(h.n_error(law))
        row["Loss error (approach 3)"] = _pct(h.loss_error).lstrip("+")
        rows.append(row)
    last = held[-1]
    parts = [f"{_pct(last.n_error(law))} ({law})" for law in laws if law in last.predicted]
    mean = {law: float(np.mean([abs(h.n_error(law)) for h in held if law in h.predicted]))
            for law in laws if any(law in h.predicted for h in held)}
    headline = (f"Extrapolation, the headline quality figure: with the largest budget C = {last.budget:.3g} "
                f"held out and every law refitted on the others, the predicted N_opt there is off by {', '.join(parts)}"
                + (f"; approach 3 predicts that budget's losses to within {100 * last.loss_error:.2f}% on average"
                   if np.isfinite(last.loss_error) else "") + ".\n"
                f"Mean |N_opt error| over all {len(held)} budgets held out in turn: "
                + ", ".join(f"{100 * error:.1f}% ({law})" for law, error in mean.items()) + ".\n"
                "Errors are predicted / observed - 1, observed being the held-out budget's own optimum by the same "
                "method (approach 3 is compared with its parabola vertex); loss error: mean |predicted / observed - 1| "
                "over the held-out budget's runs.")
    return headline + "\n\n" + render(pd.DataFrame(rows), "github")


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
    return hparam_analysis(frame, f"in {matrix!r}", x=x, y=y, at=at, loss_note=LOSS_NOTE)


def hparam_analysis(frame: pd.DataFrame, source: str, *, x: str, y: str, at: float | None,
                    loss_note: str) -> HparamReport:
    """``frame``: one row per run with columns x, y and loss."""
    best, law = scaling.fit_hparam(frame, x, y)
    table = pd.DataFrame({x: [_g(v) for v in best[x]], f"best {y}": [_g(v) for v in best[y]],
                          "best loss": [f"{v:.4f}" for v in best["loss"]], "runs": best["cells"],
                          f"fitted {y}": [_g(float(law(v))) for v in best[x]]})
    lines = [f"{y} vs {x} {source}: the best {y} (lowest loss) at each of {len(best)} scales, "
             f"from {len(frame)} runs; {loss_note}.",
             render(table, "github"),
             f"{y} = {law.a:.4g} x {x}^{law.b:.3f}   exponent 95% CI (Student-t, {law.n - 2} dof): "
             f"[{law.b_low:.3f}, {law.b_high:.3f}]   (R^2 {law.r2:.3f}; least squares in log-log space)"]
    if at:
        low, high = law.prediction_interval(at)
        lines.append(f"predicted {y} at {x} = {at:.4g}: {float(law(at)):.4g}   95% prediction interval "
                     f"[{_g(low)}, {_g(high)}]")
    return HparamReport(frame, best, law, "\n\n".join(lines))
