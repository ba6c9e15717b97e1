"""Executors: how the cells a driver hands over get trained.

An executor is a plugin component (hook ``bench_executors``) whose factory takes its options
and returns an object with one method::

    execute(cells: list[Cell], spec: RunSpec, session: Session) -> list[CellOutcome]

It trains every cell it is given (skipping is the driver's job, see :func:`bench.runner.run_cells`)
through :func:`bench.runner.run_cell`, and returns one outcome per cell it ran. A cell's own
failure is an outcome, never an exception; a worker that dies under a cell yields an
``interrupted`` outcome (the next run resumes the cell). When ``session.stop`` is requested it
stops starting cells, lets running ones checkpoint, and returns what it has. Sweeps submit
batches of cells the same way, so one batch trains in parallel. Optionally, ``kept()`` is a
context manager inside which the executor may keep its workers between ``execute`` calls (a
sweep's rounds); ``local`` does.

Built-in: ``local`` (in this process, or ``jobs`` worker processes) and ``ray``.
"""

from __future__ import annotations

from typing import Any

from bench.errors import ConfigError
from bench.registry import Registry, unknown_name_message
from bench.schema import type_error

DEFAULT_EXECUTOR = "local"


def executor_settings(matrix_table: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """The matrix's ``[executor]`` table with command-line options (those not None) on top. A
    command line naming another executor than the matrix's drops the matrix's options."""
    given = {k: v for k, v in overrides.items() if v is not None}
    if given.get("name", matrix_table.get("name", DEFAULT_EXECUTOR)) != matrix_table.get("name", DEFAULT_EXECUTOR):
        matrix_table = {}
    return {"name": DEFAULT_EXECUTOR, **matrix_table, **given}


def build_executor(registry: Registry, settings: dict[str, Any], where: str) -> Any:
    """The executor ``settings["name"]`` with its other keys as options; bad keys are one error line."""
    name = settings.get("name", DEFAULT_EXECUTOR)
    if not registry.has("executor", name):
        raise ConfigError(f"{where}: {unknown_name_message('executor', name, registry.names('executor'))}")
    component = registry.get("executor", name)
    options = {k: v for k, v in settings.items() if k != "name"}
    for key, value in options.items():
        if key not in component.defaults:
            known = ", ".join(sorted(component.defaults)) or "none"
            raise ConfigError(f"{where}: executor {name!r} has no option {key!r} (its options: {known})")
        problem = type_error(key, value, component.defaults[key])
        if problem:
            raise ConfigError(f"{where}: executor option {problem}")
    try:
        return component.factory(**{**component.defaults, **options})
    except ValueError as exc:
        raise ConfigError(f"{where}: executor {name!r}: {exc}") from None
