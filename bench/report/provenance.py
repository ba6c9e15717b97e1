"""The provenance table: which distribution and version provided each component of each cell, and
which torch ran it (see :mod:`bench.provenance`)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from bench.components import KINDS
from bench.provenance import component_label
from bench.report.render import CELL_ID, CELL_NAME

NOTE = ("Versions recorded when each cell trained ('with': the library a component wraps); a cell whose plugin "
        "or library versions have changed since is trained again by the next `bench run`. '-': stored before "
        "bench recorded versions.")


def provenance_columns(summary: dict[str, Any]) -> dict[str, str | None]:
    """Flat frame columns ``from_<kind>`` and ``torch_version`` of one summary."""
    provenance = summary.get("provenance") or {}
    components = provenance.get("components") or {}
    columns: dict[str, str | None] = {f"from_{kind}": component_label(components[kind]) if kind in components
                                      else None for kind in KINDS}
    columns["torch_version"] = provenance.get("torch")
    return columns


def provenance_table(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per cell; a kind no cell records (a token dataset needs no tokenizer) is left out."""
    columns = {CELL_NAME: frame.get("name"), CELL_ID: frame.get("id")}
    for kind in KINDS:
        column = frame.get(f"from_{kind}")
        if column is not None and column.notna().any():
            columns[kind.capitalize()] = column
    columns["torch"] = frame.get("torch_version")
    return pd.DataFrame({k: v if v is not None else pd.Series([None] * len(frame), index=frame.index, dtype=object)
                         for k, v in columns.items()}, index=frame.index)
