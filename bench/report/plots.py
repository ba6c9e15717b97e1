"""Loss and perplexity curves as PNG files, drawn with matplotlib's Agg renderer (no display).

Per cell: train and validation loss and perplexity against epoch and against training
wall-clock seconds (evaluation excluded). Per matrix: every configuration's validation
perplexity on one figure, against epoch and against time: the mean over its seeds with a 95 %
band when it has several, n in the legend. Perplexity axes turn logarithmic when the
plotted values span more than ``LOG_SPREAD`` times.
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from bench.fileio import atomic_write_bytes
from bench.store import ResultStore
from bench.words import plural

LOG_SPREAD = 5.0
DPI = 110


@dataclass
class CellCurves:
    summary: dict[str, Any]
    rows: list[dict[str, Any]]  # metrics.jsonl

    @property
    def label(self) -> str:
        """The start of the cell's name as every other command prints it (``gpt1-L2-adamw``); the
        keys that tell configurations apart are appended where needed."""
        config = self.summary.get("config") or {}
        layers = f"-L{config['n_layer']}" if config.get("n_layer") is not None else ""
        return f"{config.get('model', '?')}{layers}-{config.get('optimizer', '?')}"

    @property
    def x_unit(self) -> str:
        """'epoch', or 'step' for a cell stopped before its first epoch ended (a pruned sweep
        trial): its steps have no known epoch length to divide by."""
        return "epoch" if _steps_per_epoch(self.epochs) else "step"

    def _x(self, step: float) -> float:
        per_epoch = _steps_per_epoch(self.epochs)
        return step / per_epoch if per_epoch else float(step)

    def log_points(self) -> list[tuple[float, float, float]]:
        """(fractional epoch or step, seconds, train loss) of every logged training window (``log_every``
        steps), the seconds interpolated between the evaluations that recorded training time."""
        timed = sorted({(0, 0.0), *((int(r["step"]), float(r["train_time_s"])) for r in self.rows
                                    if r.get("step") is not None and r.get("train_time_s") is not None)})
        steps, seconds = [t[0] for t in timed], [t[1] for t in timed]
        return [(self._x(r["step"]), float(np.interp(r["step"], steps, seconds)), float(r["train_loss"]))
                for r in self.rows if r.get("kind") == "log" and r.get("train_loss") is not None]

    @property
    def epochs(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r.get("kind") == "epoch"]

    def val_points(self) -> list[tuple[float, float, float]]:
        """(fractional epoch or step, seconds, val loss) of every validation, mid-epoch ones included."""
        return sorted((float(r["epoch"]) if r.get("kind") == "epoch" else self._x(r["step"]),
                       float(r.get("train_time_s") or 0.0), float(r["val_loss"]))
                      for r in self.rows if r.get("val_loss") is not None and r.get("step") is not None)

    def evaluations(self) -> list[tuple[int, float, float]]:
        """(step, seconds, val loss) of every validation: what a sweep's overview draws, since a
        pruned trial has steps but no finished epoch."""
        return sorted((int(r["step"]), float(r.get("train_time_s") or 0.0), float(r["val_loss"]))
                      for r in self.rows if r.get("val_loss") is not None and r.get("step") is not None)

    def val_by_step(self) -> dict[int, tuple[float, float, float]]:
        """(fractional epoch, seconds, val loss) of each evaluation, keyed by its step."""
        per_epoch = _steps_per_epoch(self.epochs)
        out = {}
        for r in self.rows:
            if r.get("val_loss") is None or r.get("step") is None:
                continue
            epoch = r["epoch"] if r.get("kind") == "epoch" else (r["step"] / per_epoch if per_epoch else None)
            if epoch is not None:
                out[int(r["step"])] = (float(epoch), float(r.get("train_time_s") or 0.0), float(r["val_loss"]))
        return out


def _steps_per_epoch(epochs: list[dict[str, Any]]) -> float | None:
    first = next((r for r in epochs if r.get("epoch") and r.get("step")), None)
    return first["step"] / first["epoch"] if first else None


def _ppl(loss: float) -> float:
    return math.exp(min(loss, 700.0))


def _finite(values: list[float]) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v) and v > 0]


def _maybe_log(axis, values: list[float]) -> None:
    values = _finite(values)
    if values and max(values) / min(values) > LOG_SPREAD:
        axis.set_yscale("log")
        # Plain numbers (3, 10, 40) read better than 3x10^0 on a perplexity axis.
        axis.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        axis.yaxis.set_minor_formatter(FuncFormatter(_minor_label))


def _minor_label(value: float, _position) -> str:
    """Label the 2, 3 and 5 between decades, leave the rest as bare ticks."""
    if value <= 0:
        return ""
    mantissa = value / 10 ** math.floor(math.log10(value))
    return f"{value:g}" if round(mantissa) in (2, 3, 5) and abs(mantissa - round(mantissa)) < 1e-6 else ""


def _floor(axis, summary: dict[str, Any]) -> None:
    floor = summary.get("entropy_floor_ppl")
    if floor:
        _floor_at(axis, floor)


def _floor_at(axis, floor: float) -> None:
    axis.axhline(floor, color="0.4", linestyle=":", linewidth=1, label=f"entropy floor {floor:.2f}")


def cell_figure(curves: CellCurves) -> Figure:
    fig = Figure(figsize=(10, 7), dpi=DPI, layout="constrained")
    axes = fig.subplots(2, 2)
    epochs = curves.epochs
    train_x_epoch = [r["epoch"] for r in epochs if r.get("train_loss") is not None]
    train_x_time = [r.get("train_time_s") or 0.0 for r in epochs if r.get("train_loss") is not None]
    train_loss = [r["train_loss"] for r in epochs if r.get("train_loss") is not None]
    val = curves.val_points()
    val_epoch, val_time, val_loss = ([p[i] for p in val] for i in range(3))
    logged = curves.log_points()
    log_epoch, log_time, log_loss = ([p[i] for p in logged] for i in range(3))
    for row, (x_train, x_val, x_log, xlabel) in enumerate((
            (train_x_epoch, val_epoch, log_epoch, curves.x_unit),
            (train_x_time, val_time, log_time, "training wall-clock (s, evaluation excluded)"))):
        for column, transform in enumerate((lambda v: v, _ppl)):
            axis = axes[row][column]
            train_y = [transform(v) for v in train_loss]
            val_y = [transform(v) for v in val_loss]
            if logged:  # every log_every steps: the curve between evaluations
                axis.plot(x_log, [transform(v) for v in log_loss], color="0.6", linewidth=1,
                          label="train (each logged window)")
            if train_y:  # none for a cell stopped before its first epoch ended
                axis.plot(x_train, train_y, marker="o", label="train (epoch mean)")
            axis.plot(x_val, val_y, marker="s", label="validation")
            if column == 1:
                _floor(axis, curves.summary)
                _maybe_log(axis, train_y + val_y + [curves.summary.get("entropy_floor_ppl") or 0])
            axis.set_xlabel(xlabel)
            if row == 0:
                axis.xaxis.set_major_locator(MaxNLocator(integer=True))
            axis.set_ylabel("loss (nats/token)" if column == 0 else "perplexity")
            axis.grid(True, alpha=0.3)
            axis.legend(fontsize=8)
    summary = curves.summary
    fig.suptitle(f"{summary.get('name', curves.label)}  ({summary.get('device', '?')}, "
                 f"status {summary.get('status', '?')})")
    return fig


# Config keys that never tell two configurations apart: the seed is what a band spans.
NOT_CONFIGURATION = frozenset({"seed", "halt_at_step", "checkpoint", "checkpoint_every", "checkpoint_async",
                               "memory_interval_ms", "peak_tflops", "target_loss", "target_ppl", "max_checkpoint_mb"})


@dataclass
class Band:
    """One configuration's validation loss over its seeds, evaluation by evaluation."""

    label: str
    model: str | None
    n: int
    epoch: list[float]
    seconds: list[float]
    mean: list[float]
    low: list[float]
    high: list[float]


def configuration_bands(cells: list[CellCurves]) -> list[Band]:
    """Cells grouped by configuration (every config key but the seed): at each evaluation step all of
    a configuration's seeds reached, the mean val loss and its 95 % Student-t interval."""
    from bench.analysis.stats import t_interval

    def key(c: CellCurves) -> str:
        config = c.summary.get("config") or {}
        return repr(sorted((k, repr(v)) for k, v in config.items() if k not in NOT_CONFIGURATION))

    groups: dict[str, list[CellCurves]] = {}
    for cell in cells:
        groups.setdefault(key(cell), []).append(cell)
    configs = [(c[0].summary.get("config") or {}) for c in groups.values()]
    varying = _label_keys(configs)
    bands = []
    for members in groups.values():
        config = members[0].summary.get("config") or {}
        label = members[0].label + "".join(f" {k}={_short(config.get(k))}" for k in varying)
        by_step: dict[int, list[tuple[float, float, float]]] = {}
        for cell in members:
            for step, point in cell.val_by_step().items():
                by_step.setdefault(step, []).append(point)
        steps = sorted(s for s, points in by_step.items() if len(points) == len(members))
        intervals = [t_interval([p[2] for p in by_step[s]]) for s in steps]
        bands.append(Band(label, config.get("model"), len(members),
                          [float(np.mean([p[0] for p in by_step[s]])) for s in steps],
                          [float(np.mean([p[1] for p in by_step[s]])) for s in steps],
                          [i.mean for i in intervals], [i.low for i in intervals], [i.high for i in intervals]))
    return bands


def _label_keys(configs: list[dict[str, Any]]) -> list[str]:
    """Keys that tell configurations of the same model, optimizer and depth apart (lr, a swept width);
    keys that only follow from the optimizer or model (betas, momentum) are already in the label."""
    def family(config: dict[str, Any]) -> tuple:
        return config.get("model"), config.get("optimizer"), config.get("n_layer")

    keys = []
    for key in dict.fromkeys(k for config in configs for k in config):
        if key in NOT_CONFIGURATION or key in ("model", "optimizer", "n_layer"):
            continue
        seen: dict[tuple, set[str]] = {}
        for config in configs:
            seen.setdefault(family(config), set()).add(repr(config.get(key)))
        if any(len(values) > 1 for values in seen.values()):
            keys.append(key)
    return keys


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def matrix_figure(name: str, cells: list[CellCurves]) -> Figure:
    """Every configuration's validation perplexity: the mean over its seeds and, with 2+ seeds, the
    95 % t band (computed on the loss, drawn as exp of it), against epoch and against time."""
    bands = configuration_bands(cells)
    fig = Figure(figsize=(13, 6 + 0.18 * len(bands) / 3), dpi=DPI, layout="constrained")
    by_epoch, by_time = fig.subplots(1, 2)
    colors = _palette(len(bands))
    styles: dict[str | None, str] = {}
    everything: list[float] = []
    for color, band in zip(colors, bands):
        style = styles.setdefault(band.model, ("-", "--", "-.", ":")[len(styles) % 4])
        ppl = [_ppl(v) for v in band.mean]
        everything += ppl
        label = f"{band.label} (n={band.n})"
        for axis, x in ((by_epoch, band.epoch), (by_time, band.seconds)):
            axis.plot(x, ppl, linestyle=style, marker="o", markersize=3, color=color,
                      label=label if axis is by_epoch else None)
            if band.n > 1:
                low = [_ppl(v) if math.isfinite(v) else p for v, p in zip(band.low, ppl)]
                high = [_ppl(v) if math.isfinite(v) else p for v, p in zip(band.high, ppl)]
                axis.fill_between(x, low, high, color=color, alpha=0.2, linewidth=0)
                everything += low + high
    _perplexity_axes(cells, everything, ((by_epoch, "epoch"),
                                         (by_time, "training wall-clock (s, evaluation excluded; seed mean)")))
    by_epoch.xaxis.set_major_locator(MaxNLocator(integer=True))
    # Below both panels: a long list of configurations must not cover the curves.
    fig.legend(*by_epoch.get_legend_handles_labels(), loc="outside lower center", fontsize=7,
               ncol=min(3, max(1, len(bands) // 4 + 1)))
    banded = any(b.n > 1 for b in bands)
    fig.suptitle(f"{name}: validation perplexity per configuration"
                 + (" (line: exp of the mean val loss over n seeds; band: 95 % t interval)" if banded else ""))
    return fig


def _perplexity_axes(cells: list[CellCurves], everything: list[float], axes: tuple) -> None:
    """Label, grid and scale each (axis, x label) of an overview, with the entropy floor when the
    cells share one (taken from any cell that has it: a pruned trial's summary has none)."""
    floors = {c.summary["entropy_floor_ppl"] for c in cells if c.summary.get("entropy_floor_ppl") is not None}
    for axis, xlabel in axes:
        if len(floors) == 1:
            _floor_at(axis, next(iter(floors)))
        _maybe_log(axis, everything + list(floors))
        axis.set_xlabel(xlabel)
        axis.set_ylabel("validation perplexity")
        axis.grid(True, alpha=0.3, which="both")


OUTSIDE_SWEEP = "not a sweep cell"


def sweep_figure(name: str, cells: list[CellCurves], sweep: dict[str, tuple[str, bool]]) -> Figure:
    """A sweep's overview: every trial's validation perplexity against step and against time, one
    colour per group (``sweep``: cell id -> (group, is a final-seed rerun)), final reruns dashed.
    Steps, not epochs: a pruned trial stops before its first epoch ends. One legend entry per group."""
    from matplotlib.lines import Line2D

    member = {c.summary["id"]: sweep.get(c.summary["id"], (OUTSIDE_SWEEP, False)) for c in cells}
    present = set(member.values())
    groups = list(dict.fromkeys(group for group, final in [*sweep.values(), *member.values()]
                                if (group, final) in present))  # the sweep's own order of groups
    colors = dict(zip(groups, _palette(len(groups))))
    fig = Figure(figsize=(13, 6 + 0.18 * len(groups) / 3), dpi=DPI, layout="constrained")
    by_step, by_time = fig.subplots(1, 2)
    everything: list[float] = []
    for cell in cells:
        group, final = member[cell.summary["id"]]
        points = cell.evaluations()
        ppl = [_ppl(p[2]) for p in points]
        everything += ppl
        for axis, x in ((by_step, [p[0] for p in points]), (by_time, [p[1] for p in points])):
            axis.plot(x, ppl, color=colors[group], linestyle="--" if final else "-", linewidth=1.6 if final else 1,
                      marker="o", markersize=3, alpha=0.9 if final else 0.6)
    _perplexity_axes(cells, everything, ((by_step, "optimizer step"),
                                         (by_time, "training wall-clock (s, evaluation excluded)")))
    by_step.xaxis.set_major_locator(MaxNLocator(integer=True))
    handles = [Line2D([], [], color=colors[g], marker="o", markersize=3,
                      label=_group_label(g, [final for group, final in member.values() if group == g])) for g in groups]
    if any(final for _, final in member.values()):
        handles.append(Line2D([], [], color="0.3", linestyle="--", label="dashed: final-seed rerun of the best trial"))
    handles += [h for h in by_step.get_legend_handles_labels()[0] if h.get_label().startswith("entropy floor")]
    fig.legend(handles=handles, loc="outside lower center", fontsize=8, ncol=min(4, len(handles)))
    fig.suptitle(f"{name}: validation perplexity of every sweep trial, one colour per group")
    return fig


def _group_label(group: str, finals: list[bool]) -> str:
    trials, reruns = finals.count(False), finals.count(True)
    return f"{group} ({plural(trials, 'trial')}" + (f", {reruns} final" if reruns else "") + ")"


def _palette(count: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if count <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(count)]


def _safe(name: str) -> str:
    return re.sub(r"[^\w.=+-]", "_", name)


def _save(fig: Figure, path: Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    atomic_write_bytes(path, buffer.getvalue())  # a reader never sees half a PNG
    return path


def write_plots(store: ResultStore, out_dir: str | Path, summaries: list[dict[str, Any]],
                sweep: dict[str, tuple[str, bool]] | None = None) -> list[Path]:
    """PNG files for the given cells of one matrix under ``out_dir/<matrix>/``; returns their paths.
    The overview is :func:`sweep_figure` when ``sweep`` maps cell ids to their groups (a sweep's
    trials are one-seed configurations: bands over seeds would be one line each, labelled alike).

    A cell whose metrics.jsonl is unreadable or differs from what its summary recorded is left
    out with a warning (see :meth:`bench.store.CellRecord.read_metrics`)."""
    target = Path(out_dir) / store.path.name
    cells = []
    for summary in summaries:
        rows = store.cell(summary["id"]).read_metrics()
        if any(r.get("val_loss") is not None for r in rows):
            cells.append(CellCurves(summary, rows))
    written = [_save(cell_figure(c), target / f"{_safe(c.summary.get('name') or c.summary['id'])}.png")
               for c in cells]
    if cells:
        overview = sweep_figure(store.path.name, cells, sweep) if sweep else matrix_figure(store.path.name, cells)
        written.append(_save(overview, target / "all_cells_val_ppl.png"))
    return written
