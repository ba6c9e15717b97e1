"""Turn report tables into text: github/markdown/latex/html for people, csv and json for machines.

Tables arrive as pandas frames of raw numbers. For people, each column is formatted by its
header (see ``COLUMN_FORMATS``) and a boolean ``best`` column, if present, is dropped and its
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


def _si(value: float) -> str:
    """3 significant digits with an SI prefix: 53084160 -> '53.1 M'."""
    for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g} {prefix}"
    return f"{value:.3g}"


def _fixed(digits: int) -> Callable[[float], str]:
    return lambda v: f"{v:.{digits}f}"


def _integer(value: float) -> str:
    return f"{int(round(value)):,}"


def general(value: float) -> str:
    """A configured value as written: 0.0003 -> '0.0003', 3e-05 -> '3e-05', 2.0 -> '2'."""
    return f"{value:g}" if not float(value).is_integer() or abs(value) >= 1e16 else f"{int(value)}"


COLUMN_FORMATS: dict[str, Callable[[float], str]] = {
    "Layers": _integer, "Cells": _integer, "Finished": _integer, "Samples": _integer,
    "Params": _integer, "Non-embedding": _integer, "Mean params": _integer,
    "Tokens/s": _integer, "Mean tokens/s": _integer,
    "Train time (s)": _fixed(1), "Mean train time (s)": _fixed(1), "Time/epoch (s)": _fixed(2),
    "Eval time (s)": _fixed(2), "Time/step (ms)": _fixed(2), "Worst step 10-19 (ms)": _fixed(1),
    "Floor PPL": _fixed(3), "Val / floor": lambda v: f"{v:.2f}x",
    "FLOPs/token": _si, "Train FLOPs": _si, "Achieved FLOP/s": _si, "Peak FLOP/s": _si,
    "MFU (%)": _fixed(2), "GPU util mean (%)": _fixed(0),
    # HellaSwag: chance is 0.25 and small models differ in the third decimal.
    "HellaSwag acc": _fixed(4), "HellaSwag acc_norm": _fixed(4), "acc": _fixed(4), "acc stderr": _fixed(4),
    "acc_norm": _fixed(4), "acc_norm stderr": _fixed(4), "Items": _integer, "Items/s": _fixed(1),
    # Seeds, significance, time-to-target and performance profiles (report/analysis.py).
    "Seeds": _integer, "Seed": _integer, "Mean val loss": _fixed(4), "CI low": _fixed(4), "CI high": _fixed(4),
    "Mean diff (A-B)": _fixed(4), "Diff CI low": _fixed(4), "Diff CI high": _fixed(4), "p": lambda v: f"{v:.3g}",
    "Target loss": _fixed(4), "Best val loss": _fixed(4), "Step": _integer, "Tokens": _si, "FLOPs": _si,
    "Seconds": _fixed(1), "Rank to target (time)": _integer, "Rank at end (val loss)": _integer,
    "Score": _fixed(3), "Workloads reached": _integer, "Workloads": _integer,
}


def _two_decimals_or_significant(value: float) -> str:
    """Two decimals (perplexities, MiB), but 3 significant digits below 0.1, where two decimals would
    print lr 0.001 as '0.00': 0.001 -> '0.001', 3.2e-05 -> '3.2e-05'."""
    return f"{value:.3g}" if value != 0 and abs(value) < 0.1 else f"{value:.2f}"


DEFAULT_FLOAT = _two_decimals_or_significant


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


def _display(value: Any, formatter: Callable[[float], str] | None) -> str:
    if _missing(value):
        return MISSING
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, numbers.Real):
        if formatter is not None:
            return formatter(float(value))
        return _integer(float(value)) if isinstance(value, numbers.Integral) else DEFAULT_FLOAT(float(value))
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
    rows = []
    for position, (_, row) in enumerate(shown.iterrows()):
        cells = [_escape(_display(row[c], column_formats.get(c)), fmt) for c in shown.columns]
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
