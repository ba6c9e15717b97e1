"""Which code computed a cell: the distribution and version of each component, bench's and torch's.

Recorded in a cell's ``config.json`` and ``summary.json`` (key ``provenance``). Versions are not part
of the cell id, so ids stay stable and old results stay reportable; instead the runner compares them
before skipping a finished cell: a component now provided by another distribution or version makes
the old result stale, and the cell is trained again. bench's own version counts through its built-in
components (they come from bench's distribution); torch's version is recorded and shown but does not
make results stale (a torch upgrade would otherwise retrain every matrix). Results written before
provenance was recorded have none and are kept as they are.

A component that wraps a library declares it (``Component.depends_on``); each such distribution's
installed version is recorded under the component (``depends_on``: name -> version, ``None`` when not
installed), and a changed version makes the result stale like a changed plugin version. Only
libraries recorded both then and now are compared: a result stored before its component declared
(or bench recorded) a library says nothing about which version computed it, and is kept, as a result
stored before provenance existed is.
"""

from __future__ import annotations

import importlib.metadata as metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import torch

import bench
from bench.store import CellRecord

if TYPE_CHECKING:
    from bench.registry import Registered

DISTRIBUTION = "bench-lm"


def bench_version() -> str:
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:  # running from a source tree that was never installed
        return bench.__version__


def cell_provenance(used: Mapping[str, Registered]) -> dict[str, Any]:
    components = {kind: _component_record(entry) for kind, entry in sorted(used.items())}
    return {"bench": bench_version(), "torch": torch.__version__, "components": components}


def _component_record(entry: Registered) -> dict[str, Any]:
    record: dict[str, Any] = {"name": entry.component.name, "distribution": entry.provider.distribution,
                              "version": entry.provider.version, "module": entry.provider.module}
    if entry.libraries:
        record["depends_on"] = dict(entry.libraries)
    return record


def installed_version(distribution: str) -> str | None:
    """The installed version of a distribution, ``None`` when it is not installed."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def stale_reason(previous: Mapping[str, Any], current: Mapping[str, Any]) -> str | None:
    """Why a stored result no longer matches the code that would compute it now, or None.

    ``previous`` and ``current`` are provenance dicts; an empty ``previous`` (a result stored before
    provenance existed) is never stale, nor is a library that only one of them records."""
    before = previous.get("components") or {}
    now = current.get("components") or {}
    changes = []
    for kind in sorted(set(before) & set(now)):
        old, new = before[kind], now[kind]
        both = set(_libraries(old)) & set(_libraries(new))
        if component_label(old, both) != component_label(new, both):
            changes.append(f"{kind} {new.get('name')!r}: {component_label(old)} -> {component_label(new)}")
    return "; ".join(changes) or None


def component_label(component: Mapping[str, Any], libraries: Iterable[str] | None = None) -> str:
    """``my-plugin 1.3``, or ``module my_module`` for a plugin loaded from no distribution, followed
    by the recorded libraries (``with pytorch-optimizer 3.5.1``); ``libraries`` picks which (all)."""
    if component.get("distribution"):
        label = f"{component['distribution']} {component.get('version')}"
    else:
        label = f"module {component.get('module')}"
    recorded = _libraries(component)
    shown = sorted(recorded if libraries is None else set(libraries) & set(recorded))
    if shown:
        label += " with " + ", ".join(f"{name} {recorded[name] or 'not installed'}" for name in shown)
    return label


def _libraries(component: Mapping[str, Any]) -> dict[str, str | None]:
    recorded = component.get("depends_on")
    return dict(recorded) if isinstance(recorded, Mapping) else {}


def stored_provenance(summary: Mapping[str, Any], cell_dir: Path) -> dict[str, Any]:
    """The provenance of what a cell folder holds: its summary's, else (a run killed before it wrote
    one, leaving a checkpoint) the config.json written when that run started."""
    if summary:
        return dict(summary.get("provenance") or {})
    stored = CellRecord(cell_dir).read_config()  # a damaged config.json is warned about and set aside
    return dict((stored or {}).get("provenance") or {})
