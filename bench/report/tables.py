"""Tables from the result store: pandas to shape them, tabulate to print them."""

from __future__ import annotations

import math
from typing import Any, Callable

import pandas as pd
from tabulate import tabulate

from bench.errors import BenchError

FORMATS = {"github": "github", "markdown": "pipe", "latex": "latex_raw", "html": "html", "csv": None}
MISSING = "-"


def summaries_frame(summaries: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per cell, with the config's axes flattened next to the measured figures."""
    rows = []
    for s in summaries:
        config = s.get("config", {})
        memory = s.get("memory") or {}
        rows.append({
            "name": s.get("name"), "id": s.get("id"), "status": s.get("status"),
            "model": config.get("model"), "layers": config.get("n_layer"), "optimizer": config.get("optimizer"),
            "dataset": config.get("dataset"), "seed": config.get("seed"),
            **{k: v for k, v in s.items() if not isinstance(v, (dict, list))
               and k not in ("name", "id", "status")},
            "memory_peak_bytes": _peak_bytes(memory), "memory_source": memory.get("source"),
        })
    return pd.DataFrame(rows)


def _peak_bytes(memory: dict[str, Any]) -> float | None:
    for key in ("nvml_process_peak_bytes", "allocated_peak_bytes", "rss_peak_bytes"):
        if memory.get(key) is not None:
            return memory[key]
    return None


SORT_COLUMNS = {"ppl": "best_val_ppl", "time": "train_time_s", "memory": "memory_peak_bytes",
                "name": "name", "params": "params_total"}


def sort_frame(frame: pd.DataFrame, key: str) -> pd.DataFrame:
    column = SORT_COLUMNS.get(key)
    if column is None:
        raise BenchError(f"unknown sort key {key!r}; use one of {', '.join(SORT_COLUMNS)}")
    if column not in frame:
        return frame
    return frame.sort_values(column, na_position="last", kind="stable")


def perplexity_table(frame: pd.DataFrame) -> pd.DataFrame:
    def train_at_best(row) -> str | None:
        if _missing(row.get("train_ppl_at_best")):
            return None
        return f"{row['train_ppl_at_best']:.2f} [{int(row['best_epoch'])}]"

    table = pd.DataFrame({
        "Model": frame["model"], "Layers": frame["layers"], "Optimizer": frame["optimizer"],
        "Val PPL": frame.get("best_val_ppl"),
        "Train PPL [epoch]": frame.apply(train_at_best, axis=1) if len(frame) else [],
        "Test PPL": frame.get("test_ppl"),
        "Status": frame["status"],
    })
    return table


def render(table: pd.DataFrame, fmt: str, *, floatfmt: str = ".2f") -> str:
    if fmt not in FORMATS:
        raise BenchError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    cleaned = table.astype(object).where(table.notna(), None)
    cleaned = cleaned.map(lambda v: None if isinstance(v, float) and math.isnan(v) else v)
    if fmt == "csv":
        return cleaned.to_csv(index=False, na_rep=MISSING).rstrip("\n")
    return tabulate(cleaned.values.tolist(), headers=list(cleaned.columns), tablefmt=FORMATS[fmt],
                    floatfmt=floatfmt, missingval=MISSING)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


TableBuilder = Callable[[pd.DataFrame], pd.DataFrame]
