"""Turn report tables into text: github/markdown/latex/html for people, csv and json for machines.

Tables arrive as pandas frames of raw numbers. For people, each column is formatted by its
header (see ``COLUMN_FORMATS``), with more digits where values that differ would print alike
(see ``numbers.py``), and a boolean ``best`` column, if present, is dropped and its
rows set in bold. Missing values always print as ``-`` (``null`` in json), never ``nan``.
"""

from __future__ import annotations

import html
import json
import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd
from tabulate import tabulate

from bench.errors import BenchError
from bench.report.numbers import SI, Fixed, PValue, Significant, TwoDecimalsOrSignificant, integer, settle

# "text" is for a terminal (the default): plain columns, a best row marked with a trailing "*";
# "github"/"markdown" are for pasting into a report, best rows in **bold**.
FORMATS = {"text": "simple", "github": "github", "markdown": "pipe", "latex": "latex_raw", "html": "unsafehtml",
           "csv": None, "json": None}
BEST_MARK = " *"  # the text format's bold
MISSING = "-"
BEST = "best"
# Columns for machines: csv and json carry them, the formats for people leave them out, except the
# cell name in a table that has no other way to tell its rows apart (no Architecture column: the
# versions and estimate-vs-actual tables).
CELL_NAME, CELL_ID = "Cell", "Cell id"
MACHINE_ONLY = (CELL_NAME, CELL_ID)
IDENTITY = "Architecture"


def general(value: float) -> str:
    """A configured value as written: 0.0003 -> '0.0003', 3e-05 -> '3e-05', 2.0 -> '2'."""
    return f"{value:g}" if not float(value).is_integer() or abs(value) >= 1e16 else f"{int(value)}"


LOSS = Fixed(4)  # losses differ in the 3rd-4th decimal
DIFFERENCE = Significant(3)  # a difference of losses (0.000412): decimals would print it, and its CI, as 0.0004
_integer = integer

COLUMN_FORMATS: dict[str, Callable[[float], str]] = {
    "Layers": _integer, "Cells": _integer, "Finished": _integer, "Samples": _integer,
    "Params": _integer, "Non-embedding": _integer, "Mean params": _integer,
    "Tokens/s": _integer, "Mean tokens/s": _integer,
    "Train time (s)": Fixed(1), "Mean train time (s)": Fixed(1), "Time/epoch (s)": Fixed(2),
    "Eval time (s)": Fixed(2), "Time/step (ms)": Fixed(2), "Worst step 10-19 (ms)": Fixed(1),
    "Floor PPL": Fixed(3), "Val / floor": Fixed(2, "x"),
    "FLOPs/token": SI(), "Train FLOPs": SI(), "Achieved FLOP/s": SI(), "Peak FLOP/s": SI(),
    "MFU (%)": Fixed(2), "GPU util mean (%)": Fixed(0),
    # HellaSwag: chance is 0.25 and small models differ in the third decimal.
    "HellaSwag acc": Fixed(4), "HellaSwag acc_norm": Fixed(4), "acc": Fixed(4), "acc stderr": Fixed(4),
    "acc_norm": Fixed(4), "acc_norm stderr": Fixed(4), "Items": _integer, "Items/s": Fixed(1),
    # Seeds, significance, time-to-target and performance profiles (report/analysis.py).
    "Seeds": _integer, "Seed": _integer, "CI low": LOSS, "CI high": LOSS,
    "Mean diff (A-B)": DIFFERENCE, "Diff CI low": DIFFERENCE, "Diff CI high": DIFFERENCE,
    "p": PValue(), "p (Holm)": PValue(), "t-test p": PValue(), "SD": Significant(3),
    "Step": _integer, "Tokens": SI(), "FLOPs": SI(), "D_eff": SI(), "Speedup": Significant(3),
    "Seconds": Fixed(1), "Rank": _integer, "Rank to target (time)": _integer, "Rank at end (val loss)": _integer,
    "Score": Fixed(3), "Workloads reached": _integer, "Workloads": _integer,
}

DEFAULT_FLOAT = TwoDecimalsOrSignificant()


# Measured times, memory and rates: their run-to-run noise is larger than the digits a collision
# would add, so two cells at 383.30 MiB are shown alike rather than as 383.305 and 383.297.
MEASURED_UNITS = ("(s)", "(ms)", "mib", "(mb)", "gib", "/s", "time")


def column_format(header: str, formats: dict[str, Callable[[float], str]]) -> Callable[[float], str] | None:
    """The format of a column by its header: listed, else 4 decimals for any loss (a sweep's
    best_val_loss, 'Best val loss'), else None (the default for its values). A measured time,
    memory or rate keeps its format's digits (never refined)."""
    fmt = formats.get(header) or (LOSS if "loss" in header.lower() else None)
    if any(unit in header.lower() for unit in MEASURED_UNITS):
        return unrefined(fmt or DEFAULT_FLOAT)
    return fmt


def unrefined(fmt: Callable[[float], str]) -> Callable[[float], str]:
    """``fmt`` without its ``finer()``, so :func:`settle` leaves its digits as they are."""
    return lambda value: fmt(value)


@dataclass
class Section:
    """One titled table of one matrix, with sentences that qualify its figures."""

    key: str
    title: str
    table: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    formats: dict[str, Callable[[float], str]] = field(default_factory=dict)  # beyond COLUMN_FORMATS


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def _display(value: Any, formatter: Callable[[float], str] | None,
             fractional: Callable[[float], str] = DEFAULT_FLOAT) -> str:
    if _missing(value):
        return MISSING
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, numbers.Real):
        if formatter is not None:
            return formatter(float(value))
        return _integer(float(value)) if isinstance(value, numbers.Integral) else fractional(float(value))
    return str(value)


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _escape(text: str, fmt: str) -> str:
    if fmt == "latex":
        return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)
    if fmt == "html":
        return html.escape(text)
    return text.replace("|", "\\|")


def _bold(text: str, fmt: str) -> str:
    if text == MISSING:
        return text
    return {"latex": rf"\textbf{{{text}}}", "html": f"<b>{text}</b>"}.get(fmt, f"**{text}**")


def _numeric(column: pd.Series) -> bool:
    values = [v for v in column if not _missing(v)]
    return bool(values) and all(isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))
                                for v in values)


def _settled(column: pd.Series, formatter: Callable[[float], str] | None) -> tuple[Callable | None, Callable]:
    """The column's format and its default for fractional values, each with enough digits that the
    column's values that differ print differently (whole numbers without a format stay whole)."""
    reals = [v for v in column if not _missing(v) and isinstance(v, numbers.Real)
             and not isinstance(v, (bool, np.bool_))]
    if formatter is not None:
        return settle(formatter, [float(v) for v in reals]), DEFAULT_FLOAT
    return None, settle(DEFAULT_FLOAT, [float(v) for v in reals if not isinstance(v, numbers.Integral)])


def render(table: pd.DataFrame, fmt: str, formats: dict[str, Callable[[float], str]] | None = None) -> str:
    """One table as text, each column formatted by ``formats`` or ``COLUMN_FORMATS`` (people's
    formats only; those also leave out the cell name and id columns)."""
    if fmt not in FORMATS:
        raise BenchError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    if fmt == "json":
        return json.dumps(records(table), indent=2)
    if fmt == "csv":
        cleaned = table.astype(object).map(lambda v: None if _missing(v) else v)
        return cleaned.to_csv(index=False, na_rep=MISSING).rstrip("\n")
    best = table[BEST].fillna(False).astype(bool).tolist() if BEST in table else [False] * len(table)
    hidden = (BEST, *MACHINE_ONLY) if IDENTITY in table else (BEST, CELL_ID)
    shown = table.drop(columns=[c for c in hidden if c in table])
    column_formats = {**COLUMN_FORMATS, **(formats or {})}
    settled = {c: _settled(shown[c], column_format(str(c), column_formats)) for c in shown.columns}
    rows = []
    for position, (_, row) in enumerate(shown.iterrows()):
        cells = [_escape(_display(row[c], *settled[c]), fmt) for c in shown.columns]
        if best[position] and fmt == "text":
            cells = [cells[0] + BEST_MARK, *cells[1:]]
        elif best[position]:
            cells = [_bold(c, fmt) for c in cells]
        rows.append(cells)
    align = ["right" if _numeric(shown[c]) else "left" for c in shown.columns]
    headers = [_escape(str(c), fmt) for c in shown.columns]
    return tabulate(rows, headers=headers, tablefmt=FORMATS[fmt], colalign=align or None, disable_numparse=True)


def records(table: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as JSON-ready dicts: numpy scalars unwrapped, missing values as None."""
    out = []
    for _, row in table.iterrows():
        out.append({str(c): _plain(row[c]) for c in table.columns})
    return out


def _plain(value: Any) -> Any:
    if _missing(value):
        return None
    if hasattr(value, "item"):
        value = value.item()
    return value


def render_document(matrices: dict[str, list[Section]], fmt: str) -> str:
    """Every section of every matrix, each under a heading in the format's own syntax."""
    if fmt not in FORMATS:
        raise BenchError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    if fmt == "json":
        document = {name: {s.key: {"title": s.title, "rows": records(s.table), "notes": s.notes}
                           for s in sections} for name, sections in matrices.items()}
        return json.dumps({"matrices": document}, indent=2)
    total = sum(len(sections) for sections in matrices.values())
    parts = []
    for name, sections in matrices.items():
        for section in sections:
            heading = f"{name}: {section.title}"
            body = render(section.table, fmt, section.formats)
            if fmt == "csv":
                block = body if total == 1 else f"# {heading}\n{body}"
                notes = [f"# {n}" for n in section.notes]
            elif fmt == "latex":
                block = f"% {heading}\n{body}"
                notes = [f"% {n}" for n in section.notes]
            elif fmt == "html":
                block = f"<h2>{html.escape(heading)}</h2>\n{body}"
                notes = [f"<p>{html.escape(n)}</p>" for n in section.notes]
            elif fmt == "text":
                block = f"{heading}\n{'=' * len(heading)}\n{body}"
                notes = list(section.notes)
            else:
                block = f"## {heading}\n\n{body}"
                notes = [f"_{n}_" if fmt == "markdown" else n for n in section.notes]
            parts.append("\n\n".join([block, *notes]))
    return "\n\n".join(parts)
