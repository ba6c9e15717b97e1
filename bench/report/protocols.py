"""The protocols that decide an optimizer comparison, as report sections: the fair comparison
(each configuration at its own tuned settings, paired over fresh seeds, Holm-corrected), the
speedrun's target tests, and speedups by effective data against a reference. Every section states
its rule in its notes. Inputs are plain frames (see :func:`configurations`), so a sweep's final
reruns and a plain matrix's seeds are read the same way.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import pandas as pd

from bench.analysis import protocols, speedup, stats
from bench.report.render import Section

TARGET_ALPHA = 0.01  # the speedrun's p < 0.01
SIGMA = 0.0013  # the optimization track's known seed-to-seed sigma of the val loss
Z_MARGIN = 0.004  # its (target - mean) * sqrt(n) threshold
CONFIG_COLUMNS = ["configuration", "algorithm", "settings", "seed", "loss", "tokens", "id"]


def configurations(summaries: list[dict[str, Any]], labels: dict[str, tuple[str, str]],
                   algorithm: str = "optimizer") -> pd.DataFrame:
    """One row per finished cell that ``labels`` names (cell id -> (configuration, settings shown))."""
    rows = []
    for s in summaries:
        if s.get("id") not in labels or s.get("status") != "ok" or s.get("best_val_loss") is None:
            continue
        config = s.get("config") or {}
        label, settings = labels[s["id"]]
        rows.append({"configuration": label, "algorithm": config.get(algorithm), "settings": settings,
                     "seed": config.get("seed"), "loss": float(s["best_val_loss"]),
                     "tokens": float(s.get("train_tokens") or math.nan), "id": s["id"]})
    return pd.DataFrame(rows, columns=CONFIG_COLUMNS)


def standings(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean and 95 % t interval of each configuration over its seeds, best first."""
    rows = []
    for label, group in frame.groupby("configuration", sort=False):
        interval = stats.t_interval(group["loss"])
        rows.append({"Configuration": label, "Tuned settings": group["settings"].iloc[0], "Seeds": interval.n,
                     "Mean val loss": interval.mean, "CI low": interval.low, "CI high": interval.high})
    table = pd.DataFrame(rows).sort_values("Mean val loss", kind="stable").reset_index(drop=True)
    table.insert(0, "Rank", range(1, len(table) + 1))
    return table


def all_pairs(frame: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """Every pair of configurations, paired over their common seeds, with d_z and Holm-adjusted p."""
    order = list(standings(frame)["Configuration"])
    rows = []
    for first, second in itertools.combinations(order, 2):
        a = _by_seed(frame, first)
        b = _by_seed(frame, second)
        common = sorted(set(a.index) & set(b.index))
        result = stats.paired_comparison(a[common].to_numpy(), b[common].to_numpy(), alpha=alpha)
        rows.append({"A": first, "B": second, "Seeds": result.n, "Mean diff (A-B)": result.mean_difference,
                     "Diff CI low": result.low, "Diff CI high": result.high, "d_z": result.effect,
                     "p": result.p_value})
    table = pd.DataFrame(rows, columns=["A", "B", "Seeds", "Mean diff (A-B)", "Diff CI low", "Diff CI high",
                                        "d_z", "p"])
    table["p (Holm)"] = stats.holm(table["p"].to_numpy()) if len(table) else []
    table["A is"] = stats.corrected_verdicts(table["Seeds"], table["Mean diff (A-B)"], table["p (Holm)"], alpha)
    return table


def _by_seed(frame: pd.DataFrame, label: str) -> pd.Series:
    rows = frame[frame["configuration"] == label]
    return pd.Series(rows["loss"].to_numpy(dtype=float), index=rows["seed"].to_numpy()).groupby(level=0).mean()


def pairs_rule(count: int, alpha: float) -> str:
    return (f"Rule: paired t test over common seeds (scipy.stats.ttest_rel), Holm-corrected across the {count} "
            f"pair(s) of this table; 'better'/'worse' when the Holm-adjusted p < {alpha:g} (family-wise error "
            f"<= {alpha:g}). d_z = mean paired difference / sd of the differences (effect size: |d_z| 0.2 small, "
            f"0.5 medium, 0.8 large); read it next to the difference in nats, which says whether a "
            f"significant gap matters.")


def fair_sections(frame: pd.DataFrame, alpha: float, warnings: list[str]) -> list[Section]:
    """The comparison a fair protocol exists for: each group's best trial rerun over the final seeds."""
    if frame.empty:
        return []
    pairs = all_pairs(frame, alpha)
    seeds = sorted({int(s) for s in frame["seed"].dropna()})
    notes = [f"Each configuration at its own tuned settings (its sweep group's best trial), rerun over the final "
             f"seeds {seeds} (finished ones); other trial cells are left out. Intervals: Student-t over seeds."]
    pair_notes = [pairs_rule(len(pairs), alpha)]
    if len(seeds) < 2:
        pair_notes.append("One final seed: no claim is possible; set [sweep] final_seeds = [0, 1, 2] or more.")
    return [Section("fair_standings", "fair comparison: each at its own tuned settings, over the final seeds",
                    standings(frame), notes + warnings),
            Section("fair_pairs", f"fair comparison: every pair, Holm-corrected ({len(pairs)} pairs)", pairs,
                    pair_notes)]


def target_section(frame: pd.DataFrame, target: float, *, alpha: float = TARGET_ALPHA, sigma: float = SIGMA,
                   margin: float = Z_MARGIN) -> Section:
    """The speedrun's two rules for 'this configuration reaches the target', per configuration."""
    rows = []
    for label, group in frame.groupby("configuration", sort=False):
        t = stats.target_t_test(group["loss"], target, alpha)
        z = stats.z_rule(group["loss"], target, sigma, margin)
        rows.append({"Configuration": label, "Seeds": t.n, "Mean val loss": t.mean, "SD": t.sd,
                     "Target loss": target, "t-test p": t.p_value, f"Passes t (p < {alpha:g})": t.passed,
                     "(target - mean) sqrt(n)": z.statistic, "z": z.z,
                     f"Passes z (>= {margin:g})": z.passed})
    return Section("target_test", f"reaching the target val loss {target:.4g} (speedrun rules)", pd.DataFrame(rows), [
        f"t rule (modded-nanogpt record track): one-sided one-sample t test that the mean val loss over seeds is "
        f"below the target (scipy.stats.ttest_1samp, alternative='less'); passes when p < {alpha:g} "
        f"(--target-alpha). Needs 2+ seeds.",
        f"z rule (optimization track): passes when (target - mean) x sqrt(n) >= {margin:g} (--z-margin), "
        f"i.e. z = that / sigma >= {margin / sigma:.2f} with the known seed sd sigma = {sigma:g} (--sigma); "
        f"only valid when sigma is measured for this setup.",
        "Both assume every seed stopped at the same step (true within one configuration of a matrix)."])


def speedup_section(frame: pd.DataFrame, reference: str, curve: pd.DataFrame | None) -> Section | None:
    """Speedup of each configuration over ``reference`` by D_eff / D (see bench.analysis.speedup).

    The law is fitted to the reference's own cells at their budgets (mean over seeds per budget);
    with too few budgets, to the reference's evaluation curve (``curve``: tokens, loss), said so."""
    ref = frame[frame["algorithm"].astype(str) == reference]
    if ref.empty:
        return None
    budgets = ref.groupby("tokens")["loss"].mean()
    notes = []
    try:
        law = speedup.fit_data_law(budgets.index.to_numpy(), budgets.to_numpy())
        notes.append(f"Reference {reference}: {law.describe()}, fitted (scipy curve_fit) to its end-of-run val "
                     f"loss at {len(budgets)} budgets (mean over seeds).")
    except speedup.TooFewPoints as exc:
        if curve is None or curve.empty:
            return Section("speedup", f"speedup vs {reference} (D_eff / D)", pd.DataFrame(), [
                f"Too few points for the reference's L(D) = E + B / D^beta: {exc}; run {reference} at 4 or more "
                f"budgets (max_steps or max_tokens values)."])
        try:
            law = speedup.fit_data_law(curve["tokens"].to_numpy(), curve["loss"].to_numpy())
        except (speedup.TooFewPoints, RuntimeError) as second:
            return Section("speedup", f"speedup vs {reference} (D_eff / D)", pd.DataFrame(),
                           [f"Too few points for the reference's law: {exc}; its evaluation curve: {second}."])
        notes.append(f"Too few budgets of {reference} for an end-of-run fit ({exc}); instead {law.describe()} is "
                     f"fitted to {reference}'s own evaluation curve (val loss at each evaluation vs tokens seen, "
                     f"its final-seed runs). Under a decaying schedule a mid-run loss is higher than a run ending "
                     f"there would reach, so this law understates the reference: D_eff and every speedup are "
                     f"overstated. Run {reference} at 4+ budgets for Marin's protocol.")
    except RuntimeError as exc:  # curve_fit did not converge
        return Section("speedup", f"speedup vs {reference} (D_eff / D)", pd.DataFrame(),
                       [f"The fit of the reference's L(D) did not converge: {exc}"])
    rows = []
    for label, group in frame.groupby("configuration", sort=False):
        loss, tokens = float(group["loss"].mean()), float(group["tokens"].median())
        d_eff = law.effective_tokens(loss)
        rows.append({"Configuration": label, "Seeds": len(group), "Mean val loss": loss, "Tokens": tokens,
                     "D_eff": d_eff, "Speedup": speedup.speedup(law, loss, tokens),
                     "D_eff in fitted range": law.within(d_eff)})
    table = pd.DataFrame(rows).sort_values("Speedup", ascending=False, kind="stable").reset_index(drop=True)
    outside = int((~table["D_eff in fitted range"]).sum())
    if outside:
        notes.append(f"{outside} configuration(s) have a D_eff outside the {law.low:.3g}-{law.high:.3g} tokens the law "
                     f"was fitted on: their speedups extrapolate the reference's curve and can be off by orders "
                     f"of magnitude; read them as 'beyond what the reference reached', not as a factor.")
    notes.insert(0, f"Rule (Marin): D_eff = tokens {reference} would need for the same val loss, from its fitted "
                    f"L(D); speedup = D_eff / D. > 1: fewer tokens than {reference}; inf: below {reference}'s "
                    f"fitted floor E. A speedup is a model-based extrapolation outside the fitted token range.")
    return Section("speedup", f"speedup vs {reference} (D_eff / D)", table, notes)


def decay_warnings(summaries: list[dict[str, Any]], ids) -> list[str]:
    """A warning when any compared cell is not ranked at the end of its decaying schedule."""
    wanted = set(ids)
    reasons = [(s.get("name") or s.get("id"), r) for s in summaries if s.get("id") in wanted
               and (r := protocols.ranked_before_end(s))]
    if not reasons:
        return []
    shown = "; ".join(f"{name}: {why}" for name, why in reasons[:3])
    more = f" and {len(reasons) - 3} more" if len(reasons) > 3 else ""
    return [f"Warning: {len(reasons)} compared cell(s) are ranked at a point other than the end of a decaying "
            f"schedule ({shown}{more}); rankings flip while the learning rate decays, compare at the end."]


def plain_labels(summaries: list[dict[str, Any]], axes: list[str]) -> dict[str, tuple[str, str]]:
    """A plain matrix's configurations: the values of its varying axes (seed aside)."""
    labels = {}
    for s in summaries:
        config = s.get("config") or {}
        labels[s["id"]] = (", ".join(f"{k}={config.get(k)}" for k in axes) or "all cells", "")
    return labels


def evaluation_curve(frame: pd.DataFrame, reference: str, read_metrics) -> pd.DataFrame:
    """The reference's val loss at every evaluation against tokens seen, mean over its cells per step."""
    rows = []
    for cell_id, tokens in zip(frame.loc[frame["algorithm"].astype(str) == reference, "id"],
                               frame.loc[frame["algorithm"].astype(str) == reference, "tokens"]):
        metrics = [r for r in read_metrics(cell_id) if r.get("val_loss") is not None and r.get("step")]
        if not metrics:
            continue
        last = max(r["step"] for r in metrics)
        per_step = tokens / last if last else math.nan
        rows += [{"step": r["step"], "tokens": r["step"] * per_step, "loss": float(r["val_loss"])} for r in metrics]
    curve = pd.DataFrame(rows, columns=["step", "tokens", "loss"])
    return curve.groupby("step", as_index=False).mean() if len(curve) else curve


def protocol_sections(summaries: list[dict[str, Any]], read_metrics, *, labels: dict[str, tuple[str, str]],
                      fair: bool, warnings: list[str], which: list[str] | None, target: float | None,
                      alpha: float, target_alpha: float, sigma: float, margin: float, reference: str | None,
                      algorithm: str) -> list[Section]:
    """The fair comparison (sweeps with final seeds), target tests (a target is set) and speedups
    (the reference is among the configurations), each where it applies or was asked for."""
    frame = configurations(summaries, labels, algorithm)
    if frame.empty:
        return []

    def wants(key: str) -> bool:
        return which is None or key in which

    sections: list[Section] = []
    if fair and wants("fair"):
        sections += fair_sections(frame, alpha, warnings + decay_warnings(summaries, frame["id"]))
    if target is not None and wants("target_test"):
        sections.append(target_section(frame, target, alpha=target_alpha, sigma=sigma, margin=margin))
    present = set(frame["algorithm"].astype(str))
    chosen = reference if reference is not None else ("adamw" if "adamw" in present else None)
    if chosen is not None and wants("speedup") and frame["algorithm"].astype(str).nunique() > 1:
        section = speedup_section(frame, chosen, evaluation_curve(frame, chosen, read_metrics))
        if section is not None:
            sections.append(section)
        elif reference is not None:
            sections.append(Section("speedup", f"speedup vs {reference} (D_eff / D)", pd.DataFrame(), [
                f"No finished cell has {algorithm} = {reference}; pick --reference among: "
                f"{', '.join(sorted(present))}."]))
    return sections
