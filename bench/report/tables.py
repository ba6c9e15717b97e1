"""The report's tables, each built from the summaries frame (see ``frame.py``) as raw numbers;
``render.py`` formats them. Every builder copes with columns that old summaries lack."""

from __future__ import annotations

from typing import Any, Callable

import pandas as pd

from bench.errors import BenchError
from bench.report.frame import CONFIG_PREFIX, IMPOSSIBLE, SORT_COLUMNS, sort_frame, summaries_frame  # noqa: F401 - public API
from bench.report.provenance import NOTE as PROVENANCE_NOTE
from bench.report.provenance import provenance_table
from bench.report.render import BEST, CELL_ID, CELL_NAME, FORMATS, MISSING, Section, general, render, render_document  # noqa: F401 - public API
from bench.schema import TRAINER_KEYS

MIB = 2**20


def _num(frame: pd.DataFrame, column: str) -> pd.Series:
    if column not in frame:
        return pd.Series([float("nan")] * len(frame), index=frame.index, dtype=float)
    return pd.to_numeric(frame[column], errors="coerce")


def _text(frame: pd.DataFrame, column: str) -> pd.Series:
    if column not in frame:
        return pd.Series([None] * len(frame), index=frame.index, dtype=object)
    return frame[column].astype(object).where(frame[column].notna(), None)


# Shown as their own columns already, or bookkeeping that never distinguishes results.
_NOT_AXES = frozenset({"model", "optimizer", "n_layer", "checkpoint", "checkpoint_every", "checkpoint_async",
                       "memory_interval_ms", "peak_tflops", "halt_at_step", "log_every", "eval_every"})


def varying_axes(frame: pd.DataFrame) -> list[str]:
    """Config keys whose value differs between cells, so rows that would look alike do not.

    A harness key (lr, schedule, dataset, seed, ...) counts when it takes two values anywhere. A
    component's own key counts when it takes two values among cells of the same architecture and
    optimizer: gpt1's and gpt2-tiny's different default widths are explained by the Architecture
    column, a swept ``n_embd`` or a plugin's key is not. Cells that lack a key are ignored for it.
    """
    groups = _text(frame, "model").fillna("").astype(str) + "/" + _text(frame, "optimizer").fillna("").astype(str)
    axes = []
    for column in frame.columns:
        key = str(column)[len(CONFIG_PREFIX):]
        if not str(column).startswith(CONFIG_PREFIX) or key in _NOT_AXES:
            continue
        values = frame[column].astype(object)
        present = values.notna()
        if key in TRAINER_KEYS:
            varies = values[present].nunique() > 1
        else:
            varies = bool((values[present].groupby(groups[present]).nunique() > 1).any())
        if varies:
            axes.append(key)
    return axes


def _cell_columns(frame: pd.DataFrame) -> dict[str, pd.Series]:
    """Who each row is: name and id (csv/json only), architecture, layers, optimizer, then every
    other config key that varies between the cells (see :func:`varying_axes`)."""
    columns = {CELL_NAME: _text(frame, "name"), CELL_ID: _text(frame, "id"),
               "Architecture": _text(frame, "model"), "Layers": _num(frame, "layers"),
               "Optimizer": _text(frame, "optimizer")}
    for key in varying_axes(frame):
        columns[key] = _text(frame, f"{CONFIG_PREFIX}{key}")
    return columns


def best_per_architecture(frame: pd.DataFrame) -> pd.Series:
    """True on the finished cell with the lowest validation perplexity of each architecture."""
    ppl = _num(frame, "best_val_ppl").where(_text(frame, "status") == "ok")
    marks = pd.Series(False, index=frame.index)
    for _, group in ppl.groupby(_text(frame, "model").fillna("")):
        if group.notna().any():
            marks[group.idxmin()] = True
    return marks


def perplexity_table(frame: pd.DataFrame) -> pd.DataFrame:
    def train_at_best(row) -> str | None:
        value, epoch = row.get("train_ppl_at_best"), row.get("best_epoch")
        if pd.isna(value):
            return None
        return f"{value:.2f} [{int(epoch)}]" if not pd.isna(epoch) else f"{value:.2f}"

    table = pd.DataFrame({
        **_cell_columns(frame),
        "Val PPL": _num(frame, "best_val_ppl"),
        "Train PPL [epoch]": frame.apply(train_at_best, axis=1) if len(frame) else pd.Series(dtype=object),
        "Test PPL": _num(frame, "test_ppl"),
    }, index=frame.index)
    floor = _num(frame, "entropy_floor_ppl")
    if floor.notna().any():  # synthetic data: the source's entropy rate bounds every model
        table["Floor PPL"] = floor
        table["Val / floor"] = table["Val PPL"] / floor
    table["Status"] = _text(frame, "status")
    table[BEST] = best_per_architecture(frame)
    return table


def impossible_note(frame: pd.DataFrame) -> str | None:
    """One sentence naming every cell whose loss is below the data's entropy floor, for every table."""
    if "impossible" not in frame:
        return None
    flagged = frame[_text(frame, "impossible").notna()]
    if flagged.empty:
        return None
    cells = "; ".join(f"{name}: {reason}" for name, reason in
                      zip(_text(flagged, "name").fillna(MISSING), _text(flagged, "impossible")))
    return (f"IMPOSSIBLE RESULTS, not comparable and never marked best ({len(flagged)} cell(s), status "
            f"{IMPOSSIBLE!r}): {cells}.")


def time_table(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        **_cell_columns(frame),
        "Train time (s)": _num(frame, "train_time_s"),
        "Time/epoch (s)": _num(frame, "time_per_epoch_s"),
        "Time/step (ms)": _num(frame, "time_per_step_s") * 1e3,
        "Tokens/s": _num(frame, "tokens_per_s"),
        "Worst step 10-19 (ms)": _num(frame, "worst_step_10_19_s") * 1e3,
        "Eval time (s)": _num(frame, "eval_time_s"),
        "Val PPL": _num(frame, "best_val_ppl"),
    }, index=frame.index)


GPU_ONLY = ("Device used peak (MiB)", "GPU util mean (%)", "Allocator peak (MiB)", "Reserved peak (MiB)")


def memory_table(frame: pd.DataFrame) -> pd.DataFrame:
    table = pd.DataFrame({
        **_cell_columns(frame),
        "Process mean (MiB)": _num(frame, "memory_process_mean_bytes") / MIB,
        "Process peak (MiB)": _num(frame, "memory_process_peak_bytes") / MIB,
        "Device used peak (MiB)": _num(frame, "memory_nvml_device_used_peak_bytes") / MIB,
        "GPU util mean (%)": _num(frame, "memory_gpu_util_mean_pct"),
        "Allocator peak (MiB)": _num(frame, "memory_allocated_peak_bytes") / MIB,
        "Reserved peak (MiB)": _num(frame, "memory_reserved_peak_bytes") / MIB,
        "OS peak RSS (MiB)": _num(frame, "memory_rss_peak_bytes") / MIB,
        "Samples": _num(frame, "memory_samples"),
        "Source": _text(frame, "memory_source"),
    }, index=frame.index)
    # GPU-only figures add nothing but dashes to a report of CPU cells.
    empty = [c for c in GPU_ONLY if table[c].isna().all()]
    return table.drop(columns=empty)


def memory_notes(frame: pd.DataFrame) -> list[str]:
    sources = _text(frame, "memory_source")
    interval = _num(frame, "memory_interval_ms").dropna()
    every = f"every {interval.iloc[0]:g} ms" if len(interval) else "periodically"
    nvml = sources.fillna("").str.startswith("NVML process")
    rss = sources.fillna("").str.startswith("process RSS")
    fallback = sources.fillna("").str.contains("NVML process figure unavailable")
    notes = []
    if nvml.any():
        notes.append(f"Process mean/peak: this process's GPU memory in NVML's compute-process list, sampled {every}; "
                     "allocator peak: torch.cuda.max_memory_allocated.")
    if rss.any():
        notes.append(f"CPU cells: process mean/peak is the resident set size sampled {every} (no GPU memory exists).")
    if fallback.any():
        notes.append("Some GPU cells have no NVML process figure (NVML missing, or this PID not in its process "
                     "list); the reason is under memory.sources in their summary.json.")
    if sources.notna().any():
        notes.append("OS peak RSS is getrusage's ru_maxrss, the whole process's lifetime peak, so a cell "
                     "can inherit an earlier cell's peak in the same run.")
    if (~(nvml | rss | fallback)).any():
        notes.append("Cells without sampled figures were trained by an older bench, failed, "
                     "or ran with memory_interval_ms = 0.")
    return notes


AGGREGATE_SORT = {"ppl": "Mean val PPL", "time": "Mean train time (s)", "memory": "Mean memory peak (MiB)",
                  "params": "Mean params"}


def aggregate_table(frame: pd.DataFrame, by: str, sort: str = "ppl") -> pd.DataFrame:
    """Means over each optimizer's (``by="optimizer"``) or architecture's (``by="model"``) finished cells."""
    label = {"optimizer": "Optimizer", "model": "Architecture"}[by]
    ok = _text(frame, "status") == "ok"
    data = pd.DataFrame({
        label: _text(frame, by).fillna(MISSING), "ok": ok,
        "time": _num(frame, "train_time_s").where(ok), "tokens": _num(frame, "tokens_per_s").where(ok),
        "ppl": _num(frame, "best_val_ppl").where(ok), "memory": _num(frame, "memory_peak_bytes").where(ok) / MIB,
        "params": _num(frame, "params_total"),
    })
    grouped = data.groupby(label, sort=True)
    table = pd.DataFrame({
        "Cells": grouped.size(), "Finished": grouped["ok"].sum(),
        "Mean train time (s)": grouped["time"].mean(), "Mean tokens/s": grouped["tokens"].mean(),
        "Mean memory peak (MiB)": grouped["memory"].mean(), "Mean params": grouped["params"].mean(),
        "Mean val PPL": grouped["ppl"].mean(), "Best val PPL": grouped["ppl"].min(),
    }).reset_index()
    column = AGGREGATE_SORT.get(sort)
    if column is not None:
        table = table.sort_values(column, na_position="last", kind="stable")
    return table.reset_index(drop=True)


def params_table(frame: pd.DataFrame, peak_tflops: float | None = None) -> pd.DataFrame:
    achieved = _num(frame, "achieved_flops_per_s")
    if peak_tflops:
        peak = pd.Series(peak_tflops * 1e12, index=frame.index)
        mfu = achieved / peak
    else:
        peak, mfu = _num(frame, "peak_flops_per_s"), _num(frame, "mfu")
    return pd.DataFrame({
        **_cell_columns(frame),
        "Params": _num(frame, "params_total"), "Non-embedding": _num(frame, "params_non_embedding"),
        "FLOPs/token": _num(frame, "flops_per_token"), "Train FLOPs": _num(frame, "train_flops"),
        "Achieved FLOP/s": achieved, "Peak FLOP/s": peak, "MFU (%)": mfu * 100,
    }, index=frame.index)


def params_notes(frame: pd.DataFrame, peak_tflops: float | None = None) -> list[str]:
    notes = ["Train FLOPs are analytic: FLOPs/token (6 x matmul weights, plus causal attention for "
             "transformers) x training tokens; achieved FLOP/s divides them by the training wall time."]
    if peak_tflops:
        notes.append(f"MFU against the given peak of {peak_tflops:g} TFLOP/s.")
    else:
        sources = sorted(set(_text(frame, "peak_flops_source").dropna()))
        if sources:
            notes.append("MFU against: " + "; ".join(sources) + ".")
        if _num(frame, "mfu").isna().any():
            notes.append("MFU is blank where no peak is known (CPU, or a GPU missing from bench.timing's table); "
                         "pass --peak-tflops or set peak_tflops in the matrix.")
    return notes


def bounded_evaluation_notes(frame: pd.DataFrame) -> list[str]:
    """Say which windows a perplexity covers wherever some cells scored a fixed subset of a split
    (``val_windows``/``test_windows``) rather than all of it."""
    if "eval_windows" not in frame:
        return []
    scopes = frame["eval_windows"].dropna().astype(str)
    bounded = sorted({scope for scope in scopes if "fixed windows" in scope})
    return [f"Val/Test PPL computed over {scope} (see val_windows/test_windows)." for scope in bounded]


TableBuilder = Callable[..., Any]
TABLE_KEYS = ("perplexity", "time", "memory", "aggregate", "params", "versions")


def config_formats(frame: pd.DataFrame) -> dict[str, Callable[[float], str]]:
    """Varying config keys are printed as given (lr 0.0003, not the two decimals of a perplexity)."""
    return {key: general for key in varying_axes(frame)}


def build_sections(frame: pd.DataFrame, *, sort: str = "ppl", peak_tflops: float | None = None,
                   which: tuple[str, ...] = TABLE_KEYS) -> list[Section]:
    """The report of one matrix, in order: perplexity, time, memory, aggregates, params/FLOPs."""
    unknown = [w for w in which if w not in TABLE_KEYS]
    if unknown:
        raise BenchError(f"unknown table {unknown[0]!r}; use any of {', '.join(TABLE_KEYS)}")
    sections = []
    axis_formats = config_formats(frame)
    if "perplexity" in which:
        notes = []
        if _num(frame, "entropy_floor_ppl").notna().any():
            notes.append("Floor PPL is exp(entropy rate) of the synthetic source: no model can beat it.")
        notes.extend(bounded_evaluation_notes(frame))
        sections.append(Section("perplexity", "perplexity (best cell per architecture: bold, or * in text)",
                                perplexity_table(frame), notes, axis_formats))
    if "time" in which:
        sections.append(Section("time", "time", time_table(frame), [
            "Train time excludes evaluation; the worst step is the slowest of optimizer steps 10-19 (0-based), "
            "each timed between device synchronisations."], axis_formats))
    if "memory" in which:
        sections.append(Section("memory", "memory", memory_table(frame), memory_notes(frame), axis_formats))
    if "aggregate" in which:
        sections.append(Section("by_optimizer", "mean per optimizer", aggregate_table(frame, "optimizer", sort)))
        sections.append(Section("by_architecture", "mean per architecture", aggregate_table(frame, "model", sort)))
    if "params" in which:
        sections.append(Section("params", "parameters and FLOPs", params_table(frame, peak_tflops),
                                params_notes(frame, peak_tflops), axis_formats))
    if "versions" in which:
        title = "versions (the distribution that provided each component, and any library it wraps)"
        sections.append(Section("versions", title, provenance_table(frame), [PROVENANCE_NOTE]))
    return sections
