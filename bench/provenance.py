"""Which code computed a cell: the distribution and version of each component, bench's and torch's.

Recorded in a cell's ``config.json`` and ``summary.json`` (key ``provenance``). Versions are not part
of the cell id, so ids stay stable and old results stay reportable; instead the runner compares them
before skipping a finished cell: a component now provided by another distribution or version makes
the old result stale, and the cell is trained again. bench's own version counts through its built-in
components (they come from bench's distribution); torch's version is recorded and shown but does not
make results stale (a torch upgrade would otherwise retrain every matrix). Results written before
provenance was recorded have none and are kept as they are.
"""

from __future__ import annotations

import importlib.metadata as metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

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
    components = {kind: {"name": entry.component.name, "distribution": entry.provider.distribution,
                         "version": entry.provider.version, "module": entry.provider.module}
                  for kind, entry in sorted(used.items())}
    return {"bench": bench_version(), "torch": torch.__version__, "components": components}


def stale_reason(previous: Mapping[str, Any], current: Mapping[str, Any]) -> str | None:
    """Why a stored result no longer matches the code that would compute it now, or None.

    ``previous`` and ``current`` are provenance dicts; an empty ``previous`` (a result stored before
    provenance existed) is never stale."""
    before = previous.get("components") or {}
    now = current.get("components") or {}
    changes = []
    for kind in sorted(set(before) & set(now)):
        old, new = component_label(before[kind]), component_label(now[kind])
        if old != new:
            changes.append(f"{kind} {now[kind].get('name')!r}: {old} -> {new}")
    return "; ".join(changes) or None


def component_label(component: Mapping[str, Any]) -> str:
    """``my-plugin 1.3``, or ``module my_module`` for a plugin loaded from no distribution."""
    if component.get("distribution"):
        return f"{component['distribution']} {component.get('version')}"
    return f"module {component.get('module')}"


def stored_provenance(summary: Mapping[str, Any], cell_dir: Path) -> dict[str, Any]:
    """The provenance of what a cell folder holds: its summary's, else (a run killed before it wrote
    one, leaving a checkpoint) the config.json written when that run started."""
    if summary:
        return dict(summary.get("provenance") or {})
    stored = CellRecord(cell_dir).read_config()  # a damaged config.json is warned about and set aside
    return dict((stored or {}).get("provenance") or {})
