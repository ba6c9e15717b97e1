"""What `bench report` shows for a sweep: its trials, the best configuration of each group, the
metric against each searched value (table and PNG), and the best configuration as a matrix file."""

from __future__ import annotations

import io
import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pandas as pd

from bench.fileio import atomic_write_bytes
from bench.report.render import Section
from bench.store import ResultStore
from bench.sweep.ledger import Ledger
from bench.sweep.trials import STORAGE_FILE, storage_url

MISSING_STATUS = "running"  # proposed, never finished (a killed sweep not yet resumed)


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
    label: str
    settings: dict[str, Any]
    trials: list[TrialRow]
    final_cells: list[str]


def has_sweep(store: ResultStore) -> bool:
    return (store.path / STORAGE_FILE).is_file()


def load_groups(store: ResultStore) -> list[GroupView]:
    storage = optuna.storages.RDBStorage(storage_url(store.path))
    groups = []
    for name in optuna.study.get_all_study_names(storage):
        study = optuna.load_study(study_name=name, storage=storage)
        rows = []
        for trial in study.get_trials(deepcopy=False):
            cell = trial.user_attrs.get("cell_id")
            summary = (store.cell(cell).read_summary() if cell else None) or {}
            status = summary.get("status") or trial.user_attrs.get("status") or MISSING_STATUS
            rows.append(TrialRow(name, trial.number, dict(trial.params), status, summary, dict(trial.user_attrs)))
        groups.append(GroupView(name, study.user_attrs.get("sweep", {}), rows, study.user_attrs.get("final_cells", [])))
    return groups


def _shown(params: dict[str, Any]) -> dict[str, Any]:
    """Searched values as text with 3 significant digits: learning rates would print as 0.00."""
    return {k: (f"{v:.3g}" if isinstance(v, float) else v) for k, v in sorted(params.items())}


def _metric(settings: dict[str, Any]) -> str:
    return settings.get("metric", "best_val_loss")


def _value(row: TrialRow, metric: str) -> float | None:
    """The trial's metric; a pruned trial's is its validation loss when it was stopped."""
    key = "val_loss" if row.status in ("pruned", "paused") else metric
    value = row.summary.get(key)
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def best_row(group: GroupView) -> TrialRow | None:
    metric = _metric(group.settings)
    sign = -1 if group.settings.get("direction") == "maximize" else 1
    scored = [(value, r) for r in group.trials if r.status == "ok" and (value := _value(r, metric)) is not None]
    return min(scored, key=lambda pair: (sign * pair[0], pair[1].number))[1] if scored else None


def trials_table(groups: list[GroupView]) -> pd.DataFrame:
    rows = []
    for group in groups:
        metric = _metric(group.settings)
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
        metric, best = _metric(group.settings), best_row(group)
        time_s = sum((r.summary.get("train_time_s") or 0) for r in group.trials)
        entry = {"Group": group.label, "Trials": len(group.trials), "Sweep train time (s)": time_s}
        if best is not None:
            entry.update(_shown(best.params))
            entry.update({"Best trial": best.number, metric: _value(best, metric)})
        finals = [float(s[metric]) for s in (store.cell(c).read_summary() for c in group.final_cells)
                  if s and s.get("status") == "ok" and isinstance(s.get(metric), (int, float))]
        if group.final_cells:
            entry.update({f"{metric} over final seeds": statistics.fmean(finals) if finals else None,
                          "std": statistics.stdev(finals) if len(finals) > 1 else None,
                          "Seeds ok": f"{len(finals)}/{len(group.final_cells)}"})
        rows.append(entry)
    return pd.DataFrame(rows)


def metric_vs_value(groups: list[GroupView], param: str) -> pd.DataFrame:
    rows = []
    for group in groups:
        metric = _metric(group.settings)
        for row in sorted(group.trials, key=lambda r: (r.params.get(param) is None, r.params.get(param))):
            if param in row.params:
                rows.append({"Group": group.label, **_shown({param: row.params[param]}), metric: _value(row, metric),
                             "Status": row.status})
    return pd.DataFrame(rows)


def searched(groups: list[GroupView]) -> list[str]:
    return sorted({k for g in groups for r in g.trials for k in r.params})


def sweep_sections(store: ResultStore) -> list[Section]:
    groups = load_groups(store)
    if not groups:
        return []
    settings = groups[0].settings
    sections = [
        Section("sweep_trials", f"sweep trials ({settings.get('strategy')}, metric {_metric(settings)})",
                trials_table(groups), ["A pruned trial's metric is its validation loss at the step it was stopped."]),
        Section("sweep_best", "best configuration per group", best_table(groups, store)),
    ]
    for param in searched(groups):
        sections.append(Section(f"sweep_{param}", f"{_metric(settings)} vs {param}", metric_vs_value(groups, param)))
    if settings.get("max_total_flops"):
        sections.append(ledger_section(store, groups, float(settings["max_total_flops"])))
    return sections


def ledger_section(store: ResultStore, groups: list[GroupView], limit: float) -> Section:
    """Spent and left of the sweep's FLOP ledger, read back from the store as a resumed sweep does."""
    ledger = Ledger.from_store(limit, store, [row.attrs for g in groups for row in g.trials])
    table = pd.DataFrame([{"max_total_flops": limit, "Spent (FLOPs)": ledger.spent, "Left (FLOPs)": ledger.left,
                           "Trial cells charged": len(ledger.charged), "Trials reusing a cell": ledger.reused}])
    return Section("sweep_ledger", "FLOP ledger (all groups)", table,
                   ["Each trial cell is charged its planned training FLOPs (steps x tokens per step x FLOPs per "
                    "token) when it starts, whatever it ends as; a repeated configuration reuses the cell at no cost; "
                    "final-seed reruns are not charged."])


def write_sweep_plots(store: ResultStore, out_dir: str | Path) -> list[Path]:
    """One PNG per searched key: the metric against the value, one line per group (log x for log ranges and lr)."""
    from matplotlib.figure import Figure

    groups = load_groups(store)
    written = []
    for param in searched(groups):
        fig = Figure(figsize=(7, 4.5), layout="constrained")
        axis = fig.subplots()
        failed = []
        for group in groups:
            metric = _metric(group.settings)
            points = sorted((r.params[param], _value(r, metric)) for r in group.trials
                            if r.params.get(param) is not None and r.status == "ok" and _value(r, metric) is not None)
            line = axis.plot(*zip(*points), marker="o", label=group.label) if points else None
            color = line[0].get_color() if line else "red"
            failed += [(r.params[param], color) for r in group.trials if r.status in ("diverged", "error", "oom")]
        top = axis.get_ylim()[1]  # failed trials have no metric: marked along the top edge
        for value, color in failed:
            axis.plot([value], [top], "x", color=color, markersize=9, clip_on=False)
        kind = groups[0].settings.get("space", {}).get(param, {})
        if kind.get("log") or param == "lr":
            axis.set_xscale("log")
        axis.set_xlabel(param)
        axis.set_ylabel(_metric(groups[0].settings))
        axis.grid(True, alpha=0.3, which="both")
        axis.legend(fontsize=8)
        fig.suptitle(f"{store.path.name}: {_metric(groups[0].settings)} vs {param} (x: diverged or failed)")
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        path = Path(out_dir) / store.path.name / f"sweep_{param}.png"
        atomic_write_bytes(path, buffer.getvalue())
        written.append(path)
    return written


def _toml_value(value: Any) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return json.dumps(value)  # JSON strings, numbers, booleans and flat arrays are valid TOML


OMIT = ("seed", "halt_at_step")


def best_config_toml(store: ResultStore) -> str:
    """The best trial of each group as a plain matrix file (no [sweep]) that `bench run` accepts."""
    groups = load_groups(store)
    configs, trial_seeds = [], []
    for group in groups:
        best = best_row(group)
        if best is not None:
            config = json.loads((store.cell(best.attrs["cell_id"]).path / "config.json").read_text())["config"]
            configs.append({k: v for k, v in config.items() if k not in OMIT and v is not None})
            trial_seeds.append(config.get("seed", 0))
    if not configs:
        return ""
    settings = groups[0].settings
    seeds = settings.get("final_seeds") or trial_seeds[:1]
    common = {k: v for k, v in configs[0].items() if all(c.get(k) == v for c in configs)}
    lines = [f"# Best configuration of each group of sweep {store.path.name!r} by {_metric(settings)}",
             f"name = {json.dumps(store.path.name + '-best')}", f"seeds = {_toml_value(seeds)}", "", "[defaults]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in sorted(common.items())]
    if len(configs) > 1:
        entries = []
        for config in configs:
            own = ", ".join(f"{k} = {_toml_value(v)}" for k, v in sorted(config.items()) if k not in common)
            entries.append(f"    {{ {own} }},")
        lines += ["", "[matrix]", "include = [", *entries, "]"]
    return "\n".join(lines) + "\n"
