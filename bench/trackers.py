"""Experiment trackers (TensorBoard, W&B, MLflow, a plugin's own) attached to one cell's training.

A cell's ``trackers`` key names them; each is built in the process that trains the cell, receives
the same lifecycle calls as the logger plugins, and is closed once when the cell ends. A tracker is
an observer: a factory that raises (a missing optional package, a full disk) or a method that
raises gets one warning naming it, the tracker is dropped for the rest of this cell, and the cell
trains on with the same outcome and result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from bench.hooks import LIFECYCLE_HOOKS
from bench.registry import Registry


class TrackedHooks:
    """Stands where the lifecycle hooks stood: calls them, then every live tracker of the cell."""

    def __init__(self, hooks: Any, trackers: dict[str, Any], say: Callable[[str], None]):
        self._hooks = hooks
        self._trackers = trackers
        self._say = say

    def __getattr__(self, name: str) -> Callable[..., None]:
        if name not in LIFECYCLE_HOOKS:
            raise AttributeError(name)
        return lambda **kwargs: self._call(name, kwargs)

    def _call(self, name: str, kwargs: dict[str, Any]) -> None:
        getattr(self._hooks, name)(**kwargs)
        for tracker_name, tracker in list(self._trackers.items()):
            method = getattr(tracker, name, None)
            if method is not None:
                self._guarded(tracker_name, name, method, **kwargs)

    def close(self, status: str) -> None:
        """End every tracker's run; called once, however the cell ended."""
        for tracker_name, tracker in list(self._trackers.items()):
            close = getattr(tracker, "close", None)
            if close is not None:
                self._guarded(tracker_name, "close", close, status)
        self._trackers.clear()

    def _guarded(self, tracker_name: str, what: str, call: Callable[..., None], *args: Any, **kwargs: Any) -> None:
        try:
            call(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - a tracker's failure must not end or relabel a cell
            self._trackers.pop(tracker_name, None)
            self._say(f"bench: warning: tracker {tracker_name!r} failed in {what}: {_one_line(exc)}; "
                      "it records nothing more for this cell, which trains on")


def attach_trackers(hooks: Any, cell: dict[str, Any], registry: Registry, folder: Path,
                    say: Callable[[str], None]) -> TrackedHooks:
    """``hooks`` plus the trackers ``cell["config"]["trackers"]`` names, each built for this cell.
    ``folder`` is the matrix's results folder, where file-based trackers write."""
    trackers: dict[str, Any] = {}
    for name in cell["config"].get("trackers") or []:
        try:
            component = registry.get("tracker", name)
            trackers[name] = component.factory(cell=cell, folder=Path(folder), **component.defaults)
        except Exception as exc:  # noqa: BLE001 - as above: the cell trains without this tracker
            say(f"bench: warning: tracker {name!r} could not start for {cell['name']}: {_one_line(exc)}; "
                "the cell trains without it")
    return TrackedHooks(hooks, trackers, say)


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
