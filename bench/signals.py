"""Graceful stop: the first SIGINT or SIGTERM asks the run to stop at the next step boundary.

The trainer reads :attr:`GracefulStop.requested` after each optimizer step (a plain attribute
read, no device sync), saves a checkpoint and the partial summary, and the run exits with
``128 + signal number``. A second signal stops at once (``KeyboardInterrupt``); the checkpoint
from the first still resumes the cell. The handler is installed before any data is loaded; until
training starts (:meth:`GracefulStop.at_once`) the first signal already stops at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from types import FrameType
from typing import Any, Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class GracefulStop:
    def __init__(self, signals: tuple[int, ...] = STOP_SIGNALS):
        self.signals = signals
        self.received: int | None = None
        # Set just before a second signal raises KeyboardInterrupt, so the runner can tell a user's
        # "stop now" from a KeyboardInterrupt that a plugin raised inside a cell.
        self.forced = False
        self._previous: dict[int, Any] = {}
        self._at_once = False

    @property
    def requested(self) -> bool:
        return self.received is not None

    @property
    def cause(self) -> str:
        return signal.Signals(self.received).name if self.received is not None else "nothing"

    @property
    def exit_code(self) -> int:
        return 128 + (self.received or 0)

    def __enter__(self) -> GracefulStop:
        # Python only lets the main thread install handlers; elsewhere (a library caller's worker
        # thread) the run simply keeps the default behaviour.
        if threading.current_thread() is threading.main_thread():
            for signum in self.signals:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    @contextlib.contextmanager
    def at_once(self) -> Iterator[None]:
        """While preparing (loading data, before any cell trains) there is no step to finish and
        nothing to checkpoint: the first signal stops at once, as a second one does."""
        self._at_once = True
        try:
            yield
        finally:
            self._at_once = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._at_once and self.received is None:
            self.received, self.forced = signum, True
            raise KeyboardInterrupt(f"{signal.Signals(signum).name} before training started: stopping at once")
        if self.received is not None:
            self.forced = True
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}: stopping at once")
        self.received = signum
        # os.write, not print: a handler may interrupt a print to the same stream.
        os.write(2, f"\nbench: {signal.Signals(signum).name} received; finishing the current step, saving a "
                    f"checkpoint and stopping (send it again to stop at once)\n".encode())
