"""What the driver shows while several cells train at once.

On a terminal: one line per running cell (step, total, last train loss), redrawn in place below
the ordinary output. Elsewhere (CI logs, a file): plain lines as events arrive, at most one
progress line per cell every ``plain_interval_s``.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Callable, TextIO

CLEAR_BELOW = "\x1b[J"


def _up(lines: int) -> str:
    return f"\x1b[{lines}F" if lines else "\r"


def terminal_is_live(stream: TextIO) -> bool:
    return stream.isatty() and not os.environ.get("CI")


class ProgressBoard:
    """``plain`` receives whole lines when the board is not live (the run's ``say``)."""

    plain_interval_s = 10.0

    def __init__(self, stream: TextIO | None = None, live: bool | None = None,
                 plain: Callable[[str], None] | None = None):
        self._stream = stream
        self.live = live if live is not None else terminal_is_live(self.stream)
        self.plain = plain
        self.rows: dict[str, str] = {}  # cell label -> its progress text, in start order
        self._drawn = 0
        self._last_plain: dict[str, float] = {}

    @property
    def stream(self) -> TextIO:
        return self._stream or sys.stderr  # looked up late so a redirected stderr is honoured

    def start(self, label: str, where: str) -> None:
        self.rows[label] = f"starting on {where}"
        self._show(f"{label}: started on {where}")

    def update(self, label: str, step: int, total: int, loss: float | None) -> None:
        text = f"step {step}/{total}" + (f" loss {loss:.4f}" if loss is not None else "")
        self.rows[label] = text
        if self.live:
            self._redraw()
        elif time.monotonic() - self._last_plain.get(label, 0.0) >= self.plain_interval_s:
            self._last_plain[label] = time.monotonic()
            self._line(f"{label}: {text}")

    def finish(self, label: str) -> None:
        self.rows.pop(label, None)
        self._last_plain.pop(label, None)
        if self.live:
            self._redraw()

    def say(self, line: str) -> None:
        self._show(line)

    def close(self) -> None:
        self.rows.clear()
        if self.live:
            self._redraw()

    def _show(self, line: str) -> None:
        if self.live:  # the line goes above the board, which is drawn again below it
            self._write(_up(self._drawn) + CLEAR_BELOW + line + "\n")
            self._drawn = 0
            self._redraw()
        else:
            self._line(line)

    def _line(self, line: str) -> None:
        if self.plain is not None:
            self.plain(line)
        else:
            self._write(line + "\n")

    def _redraw(self) -> None:
        block = "".join(f"  {label}: {text}\n" for label, text in self.rows.items())
        self._write(_up(self._drawn) + CLEAR_BELOW + block)
        self._drawn = len(self.rows)

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()
