"""Tables that fit the terminal: long columns wrapped, short ones kept whole."""

from __future__ import annotations

import os
import shutil
import sys
from typing import Any, Sequence

from tabulate import tabulate

GAP = 2  # tabulate's "simple" format puts two spaces between columns
MIN_WRAPPED = 12


def terminal_width() -> int | None:
    """``$COLUMNS``, else the width of the terminal stdout writes to; None when stdout is a pipe or
    a file (output read by programs keeps one row per line)."""
    if os.environ.get("COLUMNS", "").strip().isdigit():
        return int(os.environ["COLUMNS"])
    try:
        if sys.stdout.isatty():
            return shutil.get_terminal_size().columns
    except (AttributeError, ValueError, OSError):  # a replaced or closed stdout
        pass
    return None


def fit_table(rows: Sequence[Sequence[Any]], headers: Sequence[str], wrap: Sequence[int],
              width: int | None = None) -> str:
    """``tabulate`` in the "simple" format, the columns at indexes ``wrap`` wrapped (at spaces and
    commas) so every line fits in ``width`` characters (default :func:`terminal_width`; no wrapping
    when that is None); the other columns keep their natural width.

    The room left by the whole columns is shared among the wrapped ones in proportion to their
    natural widths, each getting at least :data:`MIN_WRAPPED` characters (so a very narrow terminal
    may still overflow: the table stays readable rather than one character wide).
    """
    width = width or terminal_width()
    text = [["" if cell is None else str(cell) for cell in row] for row in rows]
    limits: list[int | None] = [None] * len(headers)
    if width is not None:
        natural = [max([len(headers[i])] + [len(line) for row in text for line in row[i].splitlines()])
                   for i in range(len(headers))]
        room = width - GAP * (len(headers) - 1) - sum(natural[i] for i in range(len(headers)) if i not in wrap)
        wanted = sum(natural[i] for i in wrap)
        if wanted > room:
            # Narrowest first, so rounding and the minimum come out of what the widest column gets.
            for i in sorted(wrap, key=natural.__getitem__):
                limit = max(MIN_WRAPPED, min(natural[i], room * natural[i] // max(wanted, 1)))
                limits[i] = limit
                room, wanted = room - limit, wanted - natural[i]
    return tabulate(text, headers=list(headers), tablefmt="simple", maxcolwidths=limits, disable_numparse=True)
