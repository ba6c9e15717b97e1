"""What `bench report` shows for a sweep: its trials, the best configuration of each group, the
metric against each searched value (table and PNG); bench/sweep/best_config.py writes the best
configuration as a matrix file."""

from __future__ import annotations

import io
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import pandas as pd

from bench import floor
from bench.analysis.protocols import edge_values
from bench.fileio import atomic_write_bytes
from bench.report.render import Section
from bench.store import ResultStore
from bench.sweep.ledger import Ledger
from bench.sweep.spec import final_seeds_note
from bench.sweep.trials import STORAGE_FILE, WARM, connect_storage

MISSING_STATUS = "running"  # proposed, never finished (a killed sweep not yet resumed)
WARM_STATUS = "warm start"  # a finished cell of another matrix, added to the study before it began


@dataclass
class TrialRow:
    group: str
    number: int
    params: dict[str, Any]
    status: str
    summary: dict[str, Any]
    attrs: dict[str, Any]


@dataclass
class GroupView:
    label: str  # the study's name: the group's label, plus " study k" with several studies
    settings: dict[str, Any]
    trials: list[TrialRow]
    final_cells: list[str]
    key: dict[str, Any] = field(default_factory=dict)  # the per keys' values
    group: str = ""  # the group's label, shared by its studies
    study: int = 0


def has_sweep(store: ResultStore) -> bool:
    return (store.path / STORAGE_FILE).is_file()


def load_groups(store: ResultStore) -> list[GroupView]:
    storage = connect_storage(store.path)
    groups = []
    for name in optuna.study.get_all_study_names(storage):
        study = optuna.load_study(study_name=name, storage=storage)
        rows = []
        for trial in study.get_trials(deepcopy=False):
            cell = trial.user_attrs.get("cell_id")
            summary = (store.cell(cell).read_summary() if cell else None) or {}
            status = summary.get("status") or trial.user_attrs.get("status") or MISSING_STATUS
            if trial.user_attrs.get(WARM):
                summary = {"best_val_loss": trial.value} if trial.value is not None else {}
            rows.append(TrialRow(name, trial.number, dict(trial.params), status, summary, dict(trial.user_attrs)))
        attrs = study.user_attrs
        groups.append(GroupView(name, attrs.get("sweep", {}), rows, attrs.get("final_cells", []),
                                attrs.get("group", {}), attrs.get("label", name), attrs.get("study", 0)))
    return groups


def _shown(params: dict[str, Any]) -> dict[str, Any]:
    """Searched values as text with 3 significant digits: learning rates would print as 0.00."""
    return {k: (f"{v:.3g}" if isinstance(v, float) else v) for k, v in sorted(params.items())}


def metric_name(settings: dict[str, Any]) -> str:
    return settings.get("metric", "best_val_loss")


def _value(row: TrialRow, metric: str) -> float | None:
    """The trial's metric; a pruned trial's is its validation loss when it was stopped."""
    key = "val_loss" if row.status in ("pruned", "paused") else metric
    value = row.summary.get(key)
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def best_row(group: GroupView) -> TrialRow | None:
    metric = metric_name(group.settings)
    sign = -1 if group.settings.get("direction") == "maximize" else 1
    scored = [(value, r) for r in group.trials if r.status in ("ok", WARM_STATUS)
              and floor.verdict(r.summary or {}) is None  # an impossible result (a leak) never wins
              and (value := _value(r, metric)) is not None]
    return min(scored, key=lambda pair: (sign * pair[0], pair[1].number))[1] if scored else None


def trials_table(groups: list[GroupView]) -> pd.DataFrame:
    rows = []
    for group in groups:
        metric = metric_name(group.settings)
        for row in group.trials:
            s = row.summary
            entry = {"Group": group.label, "Trial": row.number, **_shown(row.params)}
            if "bracket" in row.attrs:
                entry.update({"Bracket": row.attrs["bracket"], "Rung": row.attrs.get("rung")})
            used = s.get("budget_used") or {}
            steps = s.get("step") or s.get("steps")
            entry.update({"Steps": f"{int(steps):,}" if steps is not None else None,
                          "Train FLOPs": used.get("flops", s.get("train_flops")),
                          "Train time (s)": used.get("time_s", s.get("train_time_s")),
                          metric: _value(row, metric), "Status": row.status})
            rows.append(entry)
    return pd.DataFrame(rows)


def best_table(groups: list[GroupView], store: ResultStore) -> pd.DataFrame:
    rows = []
    for group in groups:
        metric, best = metric_name(group.settings), best_row(group)
        time_s = sum((r.summary.get("train_time_s") or 0) for r in group.trials)
        entry = {"Group": group.label, "Trials": len(group.trials), "Sweep train time (s)": time_s}
        if best is not None:
            entry.update(_shown(best.params))
            entry.update({"Best trial": best.number, metric: _value(best, metric)})
        finals = [float(s[metric]) for s in (store.cell(c).read_summary() for c in group.final_cells)
                  if s and s.get("status") == "ok" and isinstance(s.get(metric), (int, float))]
        if group.final_cells:
            trial_seed = (best.summary.get("config") or {}).get("seed") if best is not None else None
            seeds = group.settings.get("final_seeds") or []
            entry.update({"Final seeds": f"{', '.join(map(str, seeds))}; {final_seeds_note(seeds, trial_seed)}",
                          f"{metric} over final seeds": statistics.fmean(finals) if finals else None,
                          "std": statistics.stdev(finals) if len(finals) > 1 else None,
                          "Seeds ok": f"{len(finals)}/{len(group.final_cells)}"})
        rows.append(entry)
    return pd.DataFrame(rows)


def metric_vs_value(groups: list[GroupView], param: str) -> pd.DataFrame:
    rows = []
    for group in groups:
        metric = metric_name(group.settings)
        for row in sorted(group.trials, key=lambda r: (r.params.get(param) is None, r.params.get(param))):
            if param in row.params:
                rows.append({"Group": group.label, **_shown({param: row.params[param]}), metric: _value(row, metric),
                             "Status": row.status})
    return pd.DataFrame(rows)


def final_labels(groups: list[GroupView]) -> dict[str, tuple[str, str]]:
    """Each final rerun cell -> (its group, the tuned values it was rerun with)."""
    labels: dict[str, tuple[str, str]] = {}
    for group in groups:
        best = best_overall(groups, group.group)
        settings = ", ".join(f"{k}={v}" for k, v in _shown(best.params).items()) if best else ""
        for cell in group.final_cells:
            labels[cell] = (group.group, settings)
    return labels


def cell_groups(groups: list[GroupView]) -> dict[str, tuple[str, bool]]:
    """Each cell of the sweep -> (its group, whether it is a final-seed rerun): what the overview
    plot colours by. Warm-start trials are another matrix's cells and left out."""
    cells = {row.attrs["cell_id"]: (group.group, False) for group in groups for row in group.trials
             if row.attrs.get("cell_id") and not row.attrs.get(WARM)}
    cells.update({cell: (group.group, True) for group in groups for cell in group.final_cells})
    return cells


def best_overall(groups: list[GroupView], group_label: str) -> TrialRow | None:
    """The best finished trial of any study of a group."""
    rows = [r for g in groups if g.group == group_label for r in g.trials]
    views = [g for g in groups if g.group == group_label]
    return best_row(GroupView(group_label, views[0].settings, rows, [])) if views else None


def edge_warnings(groups: list[GroupView]) -> list[str]:
    """Marin's check: a group's winner at the lowest or highest value it tried (of 3+) of a searched
    number says the range may have cut off the optimum."""
    out = []
    for label in dict.fromkeys(g.group for g in groups):
        best = best_overall(groups, label)
        if best is None:
            continue
        tried = [r.params for g in groups if g.group == label for r in g.trials]
        for key, value in sorted(best.params.items()):
            side = edge_values([p.get(key) for p in tried], value)
            if side:
                out.append(f"Warning: {label}'s best {key} = {value:.3g} is the {side} value its search tried; "
                           f"the optimum may lie outside the range: widen it and search again.")
    return out


def trial_frame(groups: list[GroupView]) -> pd.DataFrame:
    """Every trial in proposal order: group, study, trial number, searched values, status, metric."""
    rows = []
    for group in groups:
        metric = metric_name(group.settings)
        for row in group.trials:
            rows.append({"group": group.group, "study": group.study, "trial": row.number, "params": row.params,
                         "status": row.status, "value": _value(row, metric), "id": row.attrs.get("cell_id"),
                         "warm": bool(row.attrs.get(WARM))})
    return pd.DataFrame(rows, columns=["group", "study", "trial", "params", "status", "value", "id", "warm"])


def studies_trials(groups: list[GroupView], algorithm: str) -> pd.DataFrame:
    """The trials of a sweep with several studies per group (AlgoPerf): algorithm (the group's value
    of ``algorithm``), workload (its other per keys), study and cell; empty without studies."""
    if not any(g.study for g in groups):
        return pd.DataFrame(columns=["algorithm", "workload", "study", "id"])
    rows = []
    for group in groups:
        workload = ", ".join(f"{k}={v}" for k, v in sorted(group.key.items()) if k != algorithm) or "all cells"
        for row in group.trials:
            if row.attrs.get("cell_id") and not row.attrs.get(WARM):
                rows.append({"algorithm": str(group.key.get(algorithm, group.group)), "workload": workload,
                             "study": group.study, "id": row.attrs["cell_id"]})
    return pd.DataFrame(rows, columns=["algorithm", "workload", "study", "id"])


def searched(groups: list[GroupView]) -> list[str]:
    return sorted({k for g in groups for r in g.trials for k in r.params})


def sweep_sections(store: ResultStore) -> list[Section]:
    groups = load_groups(store)
    if not groups:
        return []
    settings = groups[0].settings
    sections = [
        Section("sweep_trials", f"sweep trials ({settings.get('strategy')}, metric {metric_name(settings)})",
                trials_table(groups), ["A pruned trial's metric is its validation loss at the step it was stopped."]),
        Section("sweep_best", "best configuration per group", best_table(groups, store), edge_warnings(groups)),
    ]
    for param in searched(groups):
        sections.append(Section(f"sweep_{param}", f"{metric_name(settings)} vs {param}",
                                metric_vs_value(groups, param)))
    if settings.get("max_total_flops"):
        sections.append(ledger_section(store, groups, float(settings["max_total_flops"])))
    return sections


def ledger_section(store: ResultStore, groups: list[GroupView], limit: float) -> Section:
    """Spent and left of the sweep's FLOP ledger, read back from the store as a resumed sweep does."""
    ledger = Ledger.from_store(limit, store, [row.attrs for g in groups for row in g.trials])
    table = pd.DataFrame([{"max_total_flops": f"{limit:.3g}", "Spent (FLOPs)": f"{ledger.spent:.3g}",
                           "Left (FLOPs)": f"{ledger.left:.3g}", "Trial cells charged": str(len(ledger.charged)),
                           "Trials reusing a cell": str(ledger.reused)}])
    return Section("sweep_ledger", "FLOP ledger (all groups)", table,
                   ["Each trial cell is charged its planned training FLOPs (steps x tokens per step x FLOPs per "
                    "token) when it starts, whatever it ends as; a repeated configuration reuses the cell at no cost; "
                    "final-seed reruns are not charged."])


def write_sweep_plots(store: ResultStore, out_dir: str | Path) -> list[Path]:
    """One PNG per searched key (the metric against the value, one line per group: for lr, the LR
    sensitivity plot), and the best metric so far against the number of trials per group."""
    from matplotlib.figure import Figure

    groups = load_groups(store)
    written = []
    labels = list(dict.fromkeys(g.group for g in groups))
    for param in searched(groups):
        fig = Figure(figsize=(7, 4.5), layout="constrained")
        axis = fig.subplots()
        failed = []
        for index, label in enumerate(labels):
            metric = metric_name(groups[0].settings)
            rows = [r for g in groups if g.group == label for r in g.trials]
            points: list[tuple[Any, float]] = sorted((r.params[param], float(value)) for r in rows
                            if r.params.get(param) is not None and r.status in ("ok", WARM_STATUS)
                            and (value := _value(r, metric)) is not None)
            # Distinct markers keep groups with equal results (adam and adamw at small decay) both visible.
            line = axis.plot(*zip(*points), marker="osD^v<>p"[index % 8], markersize=7 - index % 3, alpha=0.85,
                             label=label) if points else None
            color = line[0].get_color() if line else "red"
            if points:
                best = min(points, key=lambda p: p[1])
                axis.plot([best[0]], [best[1]], marker="*", markersize=14, color=color, zorder=3)
            failed += [(r.params[param], color) for r in rows if r.status in ("diverged", "error", "oom")]
        top = axis.get_ylim()[1]  # failed trials have no metric: marked along the top edge
        for value, color in failed:
            axis.plot([value], [top], "x", color=color, markersize=9, clip_on=False)
        kind = groups[0].settings.get("space", {}).get(param, {})
        if kind.get("log") or param == "lr":
            axis.set_xscale("log")
        axis.set_xlabel(param)
        axis.set_ylabel(f"{metric_name(groups[0].settings)} (full-length trials)")
        axis.grid(True, alpha=0.3, which="both")
        _legend_below(fig, axis)
        what = "LR sensitivity" if param == "lr" else f"{metric_name(groups[0].settings)} vs {param}"
        fig.suptitle(f"{store.path.name}: {what} (star: best; x: diverged or failed)")
        written.append(_save_png(fig, Path(out_dir) / store.path.name / f"sweep_{param}.png"))
    if groups:
        written.append(_save_png(best_so_far_figure(store.path.name, groups),
                                 Path(out_dir) / store.path.name / "sweep_best_so_far.png"))
    return written


def best_so_far(rows: list[TrialRow], metric: str) -> list[float]:
    """The best finished metric after each trial, in proposal order (inf until a trial finishes;
    pruned and failed trials count as trials spent)."""
    out, best = [], math.inf
    for row in sorted(rows, key=lambda r: r.number):
        value = _value(row, metric) if row.status == "ok" else None
        if value is not None:
            best = min(best, value)
        out.append(best)
    return out


def best_so_far_figure(name: str, groups: list[GroupView]):
    """Best metric so far against trials spent, one colour per group, one line per study."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(7, 4.5), layout="constrained")
    axis = fig.subplots()
    colors: dict[str, Any] = {}
    metric = metric_name(groups[0].settings)
    for group in groups:
        rows = [r for r in group.trials if not r.attrs.get(WARM)]
        curve = best_so_far(rows, metric)
        if not curve:
            continue
        label = group.group if group.group not in colors else None
        line = axis.step(range(1, len(curve) + 1), curve, where="post", marker="o", markersize=3,
                         color=colors.get(group.group), label=label)
        colors.setdefault(group.group, line[0].get_color())
    axis.set_xlabel("trials spent (pruned and failed trials included)")
    axis.set_ylabel(f"best {metric} so far")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.grid(True, alpha=0.3)
    _legend_below(fig, axis)
    several = any(g.study for g in groups)
    fig.suptitle(f"{name}: best so far vs trials" + (" (one line per study)" if several else ""))
    return fig


def _legend_below(fig, axis) -> None:
    """One entry per group, below the axes: inside, it covers the curves' ends, where the best values are."""
    handles, labels = axis.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", fontsize=8, ncol=min(4, len(handles)))


def _save_png(fig, path: Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    atomic_write_bytes(path, buffer.getvalue())
    return path
