"""HellaSwag figures in reports: accuracy columns for the main table and a table of their own.

Both read the flat ``hellaswag_*`` summary fields (see :mod:`bench.evaluation.cell_hellaswag`)
from a frame built by :func:`bench.report.tables.summaries_frame`. The tables hold raw numbers;
:mod:`bench.report.render` prints accuracies with four decimals, because chance is 0.25 and
small models differ in the third decimal, which the two-decimal default would hide.
"""

from __future__ import annotations

import pandas as pd

ACC_COLUMNS = {"HellaSwag acc": "hellaswag_acc", "HellaSwag acc_norm": "hellaswag_acc_norm"}


def has_hellaswag(frame: pd.DataFrame) -> bool:
    """True when any cell was scored or carries a note about HellaSwag."""
    return any(column in frame and frame[column].notna().any()
               for column in ("hellaswag_acc", "hellaswag_note"))


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    return frame[name] if name in frame else pd.Series([None] * len(frame), index=frame.index, dtype=object)


def with_accuracy_columns(table: pd.DataFrame, frame: pd.DataFrame) -> pd.DataFrame:
    """``table`` (rows aligned with ``frame``) plus acc and acc_norm columns before its Status column."""
    table = table.copy()
    position = table.columns.get_loc("Status") if "Status" in table.columns else len(table.columns)
    for offset, (title, field) in enumerate(ACC_COLUMNS.items()):
        table.insert(position + offset, title, _column(frame, field))
    return table


def hellaswag_table(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per cell: accuracies with standard errors, items scored, and any note."""
    return pd.DataFrame({
        "Model": _column(frame, "model"), "Layers": _column(frame, "layers"),
        "Optimizer": _column(frame, "optimizer"), "Dataset": _column(frame, "dataset"),
        "acc": _column(frame, "hellaswag_acc"), "acc stderr": _column(frame, "hellaswag_acc_stderr"),
        "acc_norm": _column(frame, "hellaswag_acc_norm"),
        "acc_norm stderr": _column(frame, "hellaswag_acc_norm_stderr"),
        "Items": _column(frame, "hellaswag_items"), "Items/s": _column(frame, "hellaswag_items_per_s"),
        "Note": _column(frame, "hellaswag_note"),
    })
