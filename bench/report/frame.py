"""Cell summaries as one pandas frame: a row per cell, every figure a flat column.

Summaries written by older versions of bench lack some figures; the columns are still
created (empty) so every table can be built from any mix of old and new cells. Figures that
are pure arithmetic on stored ones (time per epoch, achieved FLOP/s) are derived when absent.
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from bench import floor
from bench.errors import BenchError
from bench.report.provenance import provenance_columns

# Columns every table may read, whether or not any summary has them.
EXPECTED = (
    "best_val_ppl", "train_ppl_at_best", "best_epoch", "test_ppl", "entropy_floor_ppl", "epochs", "steps",
    "train_time_s", "eval_time_s", "tokens_per_s", "time_per_step_s", "time_per_epoch_s", "worst_step_10_19_s",
    "params_total", "params_non_embedding", "flops_per_token", "train_flops", "achieved_flops_per_s",
    "peak_flops_per_s", "peak_flops_source", "mfu", "gpu_name", "device",
)
MEMORY_KEYS = (
    "nvml_process_mean_bytes", "nvml_process_peak_bytes", "nvml_device_used_peak_bytes", "gpu_util_mean_pct",
    "allocated_peak_bytes", "reserved_peak_bytes", "rss_mean_bytes", "rss_sampled_peak_bytes", "rss_peak_bytes",
    "samples", "interval_ms", "source",
)


CONFIG_PREFIX = "config."
IMPOSSIBLE = "impossible (leak?)"  # the status a report shows for a loss below the entropy floor


def _flat(value: Any) -> Any:
    """Lists and tables (betas, decay_exclude) as compact JSON text: comparable and printable."""
    return json.dumps(value, separators=(",", ":")) if isinstance(value, (dict, list)) else value


def summaries_frame(summaries: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per cell, with the config's axes flattened next to the measured figures."""
    rows = []
    for s in summaries:
        config = s.get("config") or {}
        memory = s.get("memory") or {}
        impossible = floor.verdict(s) if s.get("status") == "ok" else None
        row = {
            "name": s.get("name"), "id": s.get("id"),
            # Never a result: every table shows the status, and "best" and means take "ok" cells only.
            "status": IMPOSSIBLE if impossible else s.get("status"), "impossible": impossible,
            "model": config.get("model"), "layers": config.get("n_layer"), "optimizer": config.get("optimizer"),
            "dataset": config.get("dataset"), "seed": config.get("seed"),
            **{k: v for k, v in s.items() if not isinstance(v, (dict, list))
               and k not in ("name", "id", "status", "impossible")},
            # Every config key, so a table can show whichever of them differ between cells.
            **{f"{CONFIG_PREFIX}{k}": _flat(v) for k, v in config.items()},
        }
        for key in MEMORY_KEYS:
            row[f"memory_{key}"] = memory.get(key)
        row.update(provenance_columns(s))
        row["memory_peak_bytes"] = _peak_bytes(memory)
        row["memory_process_mean_bytes"] = _first(memory, "nvml_process_mean_bytes", "rss_mean_bytes")
        row["memory_process_peak_bytes"] = _first(memory, "nvml_process_peak_bytes", "rss_sampled_peak_bytes")
        rows.append(row)
    frame = pd.DataFrame(rows)
    for column in EXPECTED:
        if column not in frame:
            frame[column] = None
    return _derive(frame) if len(frame) else frame


def _first(memory: dict[str, Any], *keys: str) -> float | None:
    for key in keys:
        if memory.get(key) is not None:
            return memory[key]
    return None


def _peak_bytes(memory: dict[str, Any]) -> float | None:
    """The single memory figure a cell is sorted by: what the driver saw, else the allocator,
    else the sampled resident set, else the OS lifetime peak."""
    return _first(memory, "nvml_process_peak_bytes", "allocated_peak_bytes", "rss_sampled_peak_bytes",
                  "rss_peak_bytes")


def _derive(frame: pd.DataFrame) -> pd.DataFrame:
    numeric = {c: pd.to_numeric(frame[c], errors="coerce") for c in
               ("train_time_s", "steps", "epochs", "train_flops", "time_per_step_s", "time_per_epoch_s",
                "achieved_flops_per_s")}
    time = numeric["train_time_s"].where(numeric["train_time_s"] > 0)
    frame["time_per_step_s"] = numeric["time_per_step_s"].fillna(time / numeric["steps"].where(numeric["steps"] > 0))
    frame["time_per_epoch_s"] = numeric["time_per_epoch_s"].fillna(
        time / numeric["epochs"].where(numeric["epochs"] > 0))
    frame["achieved_flops_per_s"] = numeric["achieved_flops_per_s"].fillna(numeric["train_flops"] / time)
    return frame


SORT_COLUMNS = {"ppl": "best_val_ppl", "time": "train_time_s", "memory": "memory_peak_bytes",
                "name": "name", "params": "params_total"}


def sort_frame(frame: pd.DataFrame, key: str) -> pd.DataFrame:
    column = SORT_COLUMNS.get(key)
    if column is None:
        raise BenchError(f"unknown sort key {key!r}; use one of {', '.join(SORT_COLUMNS)}")
    if column not in frame:
        return frame
    if column != "name":
        values = pd.to_numeric(frame[column], errors="coerce")
        return frame.loc[values.sort_values(na_position="last", kind="stable").index]
    return frame.sort_values(column, na_position="last", kind="stable")
