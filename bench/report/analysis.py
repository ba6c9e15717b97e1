"""Report tables built on ``bench.analysis``: seeds and significance, time-to-target, performance
profiles. Inputs are cell summaries (and metrics rows for the time-based tables); outputs are
``Section`` objects that ``render.py`` prints like every other table."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd

from bench import floor
from bench.analysis import profiles, protocols, stats, targets
from bench.cells import OPERATIONAL_KEYS
from bench.errors import BenchError
from bench.report import protocols as protocols_report
from bench.report.render import Section

# Config keys that never define a configuration: the seed is what we average over, and targets
# only say how results are read.
NOT_AXES = frozenset({"seed", "target_loss", "target_ppl"}) | OPERATIONAL_KEYS
ONE_SEED_NOTE = ("One seed per configuration: no claim that one configuration beats another is possible; "
                 "add seeds = [0, 1, 2] to the matrix for intervals and paired tests.")


def _hashable(value: Any) -> Any:
    return json.dumps(value, sort_keys=True) if isinstance(value, (list, dict)) else value


def finished(summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Cells with a result: finished, and not below the data's entropy floor (see bench.floor)."""
    return [s for s in summaries if s.get("status") == "ok" and s.get("best_val_loss") is not None
            and floor.verdict(s) is None]


def varying_axes(summaries: list[dict[str, Any]]) -> list[str]:
    """Config keys (not seed, not operational) whose value differs between cells, in config order.

    Only keys every cell has count: a key that only some components take (Adam's betas, a
    transformer's n_head) follows from the component axis and is not an axis of its own."""
    configs = [s.get("config") or {} for s in summaries]
    if not configs:
        return []
    keys = [k for k in configs[0] if k not in NOT_AXES and all(k in c for c in configs)]
    axes: list[str] = []
    for key in (k for k in keys if len({_hashable(c.get(k)) for c in configs}) > 1):
        # A key fixed by an earlier axis (tie_weights by model: gpt1 ties, lstm does not) adds nothing.
        if not any(_determines(axis, key, configs) for axis in axes):
            axes.append(key)
    return axes


def _determines(axis: str, key: str, configs: list[dict[str, Any]]) -> bool:
    seen: dict[Any, Any] = {}
    return all(seen.setdefault(_hashable(c[axis]), _hashable(c[key])) == _hashable(c[key]) for c in configs)


def config_frame(summaries: list[dict[str, Any]], axes: list[str]) -> pd.DataFrame:
    """One row per cell: its axes, seed, best val loss, and identity."""
    rows = []
    for s in summaries:
        config = s.get("config") or {}
        rows.append({**{k: _hashable(config.get(k)) for k in axes}, "seed": config.get("seed"),
                     "loss": float(s["best_val_loss"]), "id": s.get("id")})
    return pd.DataFrame(rows, columns=[*axes, "seed", "loss", "id"])


def seed_count(summaries: list[dict[str, Any]]) -> int:
    return len({(s.get("config") or {}).get("seed") for s in summaries})


def one_seed_note(summaries: list[dict[str, Any]]) -> str | None:
    """What the perplexity table must say when its cells cannot be compared statistically."""
    done = finished(summaries)
    return ONE_SEED_NOTE if len(done) > 1 and seed_count(done) < 2 else None


def seeds_sections(summaries: list[dict[str, Any]], alpha: float = stats.ALPHA) -> list[Section]:
    """Mean and 95 % t interval per configuration, and paired one-axis comparisons over seeds."""
    done = finished(summaries)
    if seed_count(done) < 2:
        raise BenchError("a significance table needs at least two seeds per configuration; "
                         "add seeds = [0, 1, 2] to the matrix and run it again")
    axes = varying_axes(done) or ["model"]
    frame = config_frame(done, axes)
    per_config = stats.configuration_intervals(frame, axes, "loss")
    table = per_config.rename(columns={"seeds": "Seeds", "mean": "Mean val loss", "low": "CI low",
                                       "high": "CI high"})
    table["Mean val PPL"] = np.exp(per_config["mean"])
    table["PPL CI"] = [_ppl_interval(lo, hi) for lo, hi in zip(per_config["low"], per_config["high"])]
    pairs = stats.one_axis_pairs(frame, axes, "loss", alpha=alpha).sort_values(["axis", "fixed"], kind="stable")
    # A pair with one common seed allows no claim: it is counted, not listed, and not corrected for.
    single = int((pairs["seeds"] < 2).sum())
    pairs = pairs[pairs["seeds"] >= 2].reset_index(drop=True)
    pairs["p_holm"] = stats.holm(pairs["p_value"].to_numpy()) if len(pairs) else []
    pairs["verdict"] = stats.corrected_verdicts(pairs["seeds"], pairs["mean_difference"], pairs["p_holm"], alpha)
    comparison = pairs.rename(columns={"axis": "Axis", "a": "A", "b": "B", "fixed": "Same", "seeds": "Seeds",
                                       "mean_difference": "Mean diff (A-B)", "low": "Diff CI low",
                                       "high": "Diff CI high", "effect": "d_z", "p_value": "p",
                                       "p_holm": "p (Holm)", "verdict": "A is"})
    comparison = comparison[[c for c in comparison.columns if c != "A is"] + ["A is"]]
    left_out = ([f"{single} pair(s) with a single common seed (e.g. one-seed sweep trials) are left out: no claim "
                 f"is possible from one seed."] if single else [])
    return [
        Section("seeds", "mean over seeds per configuration (best val loss, 95 % t interval)", table, [
            "Intervals are Student-t over seeds (n - 1 degrees of freedom); the PPL interval is exp of the "
            "loss interval."]),
        Section("comparison", f"paired comparisons (configurations differing in one axis, same seeds; "
                f"{len(pairs)} pairs)", comparison, [
                    "Differences are in best val loss (nats), A minus B, paired by seed.",
                    protocols_report.pairs_rule(len(pairs), alpha), *left_out]),
    ]


def _ppl_interval(low: float, high: float) -> str | None:
    if not (np.isfinite(low) and np.isfinite(high)):
        return None
    return f"{math.exp(low):.2f} - {math.exp(high):.2f}"


def parse_target(text: str | None) -> float | None:
    """``--target 1.5`` (a val loss in nats) or ``--target ppl=4.5``; None when absent."""
    if text is None:
        return None
    kind, _, value = text.rpartition("=")
    try:
        number = float(value)
    except ValueError:
        raise BenchError(f"--target {text!r}: give a val loss (e.g. 1.5) or a perplexity (ppl=4.5)") from None
    if kind not in ("", "loss", "ppl") or number <= 0:
        raise BenchError(f"--target {text!r}: give a positive val loss (e.g. 1.5) or perplexity (ppl=4.5)")
    return targets.target_from_ppl(number) if kind == "ppl" else number


def cell_target(summary: dict[str, Any], override: float | None) -> float | None:
    """The command line's target, else the matrix's target_loss, else its target_ppl."""
    if override is not None:
        return override
    config = summary.get("config") or {}
    if config.get("target_loss"):
        return float(config["target_loss"])
    if config.get("target_ppl"):
        return targets.target_from_ppl(float(config["target_ppl"]))
    return None


def reach(summary: dict[str, Any], rows: list[dict[str, Any]], target: float) -> dict[str, float]:
    """Step, tokens, FLOPs and seconds at which this cell's evaluations first reached ``target``."""
    points = [r for r in rows if r.get("val_loss") is not None and r.get("step") is not None]
    reached = targets.first_reaching([r["step"] for r in points], [r["val_loss"] for r in points],
                                     [r.get("train_time_s") or math.nan for r in points], target)
    steps = summary.get("steps") or 0
    per_step = (summary.get("train_tokens") or 0) / steps if steps else math.nan
    return targets.cost_at(reached, per_step, float(summary.get("flops_per_token") or math.nan))


def has_targets(summaries: list[dict[str, Any]]) -> bool:
    return any(cell_target(s, None) is not None for s in summaries)


def target_section(summaries: list[dict[str, Any]], metrics: dict[str, list[dict[str, Any]]],
                   override: float | None) -> Section:
    """Time-to-target per cell next to its end-of-training rank."""
    done = [s for s in finished(summaries) if cell_target(s, override) is not None]
    axes = varying_axes(done) or ["model"]
    rows = []
    for s in done:
        target = cell_target(s, override)
        assert target is not None  # cells without a target were left out above
        cost = reach(s, metrics.get(s["id"], []), target)
        config = s.get("config") or {}
        rows.append({**{k: _hashable(config.get(k)) for k in axes}, "Seed": config.get("seed"),
                     "Target loss": target, "Step": cost["step"], "Tokens": cost["tokens"], "FLOPs": cost["flops"],
                     "Seconds": cost["time_s"], "Best val loss": s["best_val_loss"]})
    table = pd.DataFrame(rows)
    if override is not None and not np.isfinite(table["Step"]).any():
        raise BenchError(f"no cell reached the target val loss {override:.4g} (best reached: "
                         f"{table['Best val loss'].min():.4g}); choose a higher target")
    table["Rank to target (time)"] = table["Seconds"].where(np.isfinite(table["Seconds"])).rank(method="min")
    table["Rank at end (val loss)"] = table["Best val loss"].rank(method="min")
    table = table.sort_values(["Seconds", "Best val loss"], kind="stable").reset_index(drop=True)
    for column in ("Step", "Tokens", "FLOPs", "Seconds"):
        table[column] = table[column].astype(object).where(np.isfinite(table[column].astype(float)), "not reached")
    notes = [targets.READING[0].upper() + targets.READING[1:] + "."]
    if not any(v != "not reached" for v in table["Step"]):
        notes.append("No cell reached its target; lower target_loss (or raise target_ppl) to compare speeds.")
    return Section("time_to_target", "time to target (first evaluation at or below the target val loss)",
                   table, notes)


PROFILE_MEASURES = {"time": "time_s", "step": "step", "tokens": "tokens", "flops": "flops"}
DEFAULT_TOLERANCE = 1.02


def workload_times(summaries: list[dict[str, Any]], metrics: dict[str, list[dict[str, Any]]], *, algorithm: str,
                   measure: str, tolerance: float, override: float | None) -> tuple[pd.DataFrame, pd.Series, list[str]]:
    """Median (over seeds) cost to reach each workload's target: index = workload, columns = algorithm.

    Workloads are the combinations of every varying axis except ``algorithm`` and the seed."""
    done = finished(summaries)
    axes = varying_axes(done)
    if algorithm not in axes:
        raise BenchError(f"--profiles compares values of {algorithm!r}, but it does not vary between the cells; "
                         f"pick one of: {', '.join(axes) or 'none (the matrix has a single configuration)'}")
    configs = [s.get("config") or {} for s in done]
    # Keys that follow from the algorithm (an optimizer's own betas, Schedule-Free's constant schedule)
    # are part of it, not workloads.
    workload_axes = [a for a in axes if a != algorithm and not _determines(algorithm, a, configs)]
    frame = config_frame(done, axes)
    frame["workload"] = [", ".join(f"{a}={row[a]}" for a in workload_axes) or "all cells"
                         for _, row in frame.iterrows()]
    given = {s["id"]: cell_target(s, override) for s in done}
    targets_by_workload: dict[str, float] = {}
    for workload, cells in frame.groupby("workload"):
        explicit = [t for t in (given[i] for i in cells["id"]) if t is not None]
        targets_by_workload[workload] = explicit[0] if explicit else float(cells["loss"].min()) * tolerance
    by_id = {s["id"]: s for s in done}
    frame["cost"] = [reach(by_id[i], metrics.get(i, []), targets_by_workload[w])[PROFILE_MEASURES[measure]]
                     for i, w in zip(frame["id"], frame["workload"])]
    times = frame.pivot_table(index="workload", columns=algorithm, values="cost", aggfunc="median")
    derived = [w for w in targets_by_workload if not any(given[i] is not None
                                                         for i in frame.loc[frame["workload"] == w, "id"])]
    return times.fillna(math.inf), pd.Series(targets_by_workload, name="target"), derived


def profile_sections(times: pd.DataFrame, target: pd.Series, derived: list[str], *, measure: str,
                     tolerance: float, r_max: float = profiles.R_MAX) -> list[Section]:
    ratio = profiles.ratios(times)
    score = profiles.area_scores(ratio, r_max)
    scores = pd.DataFrame({"Algorithm": score.index.astype(str), "Score": score.to_numpy(),
                           "Workloads reached": np.isfinite(times.to_numpy()).sum(axis=0),
                           "Workloads": len(times)}).sort_values("Score", ascending=False, kind="stable")
    detail = ratio.copy()
    detail.columns = [f"r({c})" for c in detail.columns]
    detail.insert(0, "Target loss", target.reindex(detail.index).to_numpy())
    detail.insert(0, "Workload", detail.index)
    detail = detail.reset_index(drop=True).astype(object)
    detail = detail.map(lambda v: "not reached" if isinstance(v, float) and math.isinf(v) else v)
    how = (f"derived as {tolerance:g} x the best val loss any algorithm reached on the workload"
           if derived else "given by --target or the matrix's target_loss/target_ppl")
    if derived and len(derived) < len(times):
        how += f" (for {', '.join(derived)}; the others were given)"
    notes = [f"Score = area under rho_a(tau) for tau in [1, {r_max:g}] divided by {r_max - 1:g} (AlgoPerf); "
             f"1 = fastest on every workload. Cost = {measure} to target, the median over seeds.",
             f"Targets {how}. " + targets.READING[0].upper() + targets.READING[1:] + "."]
    return [Section("profile_scores", f"performance profile scores (r_max = {r_max:g})", scores.reset_index(drop=True),
                    notes),
            Section("profile_ratios", "performance ratios r = cost / fastest cost per workload", detail)]


def studies_profile_sections(trials: pd.DataFrame, summaries: list[dict[str, Any]], read_metrics, *, measure: str,
                             tolerance: float, override: float | None) -> list[Section]:
    """AlgoPerf's studies x trials: each trial's cost to its workload's target, the best per study,
    the median over studies (a miss is infinite), then the usual performance profile."""
    by_id = {s["id"]: s for s in summaries}
    trials = trials[trials["id"].isin(by_id)].copy()
    if trials.empty:
        return []
    trials["loss"] = [float(by_id[i].get("best_val_loss") or math.inf) if by_id[i].get("status") == "ok"
                      else math.inf for i in trials["id"]]
    goal = {w: (override if override is not None else float(cells["loss"].min()) * tolerance)
            for w, cells in trials.groupby("workload")}
    trials["cost"] = [reach(by_id[i], read_metrics(i), goal[w])[PROFILE_MEASURES[measure]]
                      if by_id[i].get("status") == "ok" else math.inf
                      for i, w in zip(trials["id"], trials["workload"])]
    times = protocols.studies_times(trials)
    sections = profile_sections(times, pd.Series(goal, name="target"), [] if override is not None else list(goal),
                                measure=measure, tolerance=tolerance)
    studies = trials["study"].nunique()
    sections[0].key, sections[1].key = "studies_profile_scores", "studies_profile_ratios"
    sections[0].title = f"performance profile over studies x trials (AlgoPerf, {studies} studies)"
    sections[0].notes.insert(0, f"Rule (AlgoPerf): per workload and algorithm, the fastest trial of each of the "
                                f"{studies} independent studies, then the median over studies; a trial that "
                                f"never reached the target is infinite, so an algorithm that missed in most "
                                f"studies misses the workload. Final-seed reruns are not trials and are left out.")
    return sections


TABLE_KEYS = ("seeds", "time_to_target", "fair", "target_test", "speedup", "studies")


def analysis_sections(summaries: list[dict[str, Any]], read_metrics, *, which: list[str] | None,
                      target: str | None, want_profiles: bool, algorithm: str, measure: str, tolerance: float,
                      profile_png, title: str, alpha: float = stats.ALPHA,
                      profile_cells: set[str] | None = None) -> list[Section]:
    """The analysis tables a report of one matrix gets: seeds/comparison when there are several
    seeds (a note when there is one), time-to-target when a target is set, profiles on request."""
    override = parse_target(target)
    if measure not in PROFILE_MEASURES:
        raise BenchError(f"--measure {measure!r}: use one of {', '.join(PROFILE_MEASURES)}")
    if tolerance < 1:
        raise BenchError(f"--tolerance {tolerance:g}: a target is the best loss times a factor >= 1, e.g. 1.02")
    done = finished(summaries)
    sections: list[Section] = []

    def wants(key: str) -> bool:
        return which is None or key in which

    if which is not None and "seeds" in which or which is None and seed_count(done) > 1:
        sections += seeds_sections(summaries, alpha)
    needs_metrics = (wants("time_to_target") and (override is not None or has_targets(done))) or want_profiles
    metrics = {s["id"]: read_metrics(s["id"]) for s in done} if needs_metrics else {}
    if wants("time_to_target") and (override is not None or has_targets(done)):
        sections.append(target_section(summaries, metrics, override))
    if want_profiles:
        # A sweep's profile compares its final reruns: its trials are the search, not the result.
        chosen = [s for s in summaries if profile_cells is None or s.get("id") in profile_cells]
        if profile_cells is not None:
            metrics.update({s["id"]: read_metrics(s["id"]) for s in finished(chosen) if s["id"] not in metrics})
        times, goal, derived = workload_times(chosen, metrics, algorithm=algorithm, measure=measure,
                                              tolerance=tolerance, override=override)
        sections += profile_sections(times, goal, derived, measure=measure, tolerance=tolerance)
        from bench.report import fit_plots  # matplotlib only when a figure is asked for

        path = fit_plots.save(fit_plots.profile_figure(profiles.ratios(times), profiles.R_MAX,
                                                       f"{title}: performance profile ({measure} to target)"),
                              profile_png)
        sections[-2].notes.append(f"Figure: {path}")
    return sections
