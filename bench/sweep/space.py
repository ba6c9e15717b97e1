"""The search space of a sweep: one distribution per searched key.

In a matrix file::

    [sweep.space]
    lr = { loguniform = [1e-4, 1e-1] }         # also: uniform = [lo, hi]
    n_layer = { int = [1, 4] }                 # also: intlog = [lo, hi]; optional step = k
    n_embd = { choice = [32, 64, 128] }

``points = N`` sets how many values a grid search takes from a continuous range (log-spaced for
the log kinds). Distributions are Optuna's, so every Optuna sampler can draw from them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from bench.errors import ConfigError

KINDS = ("choice", "uniform", "loguniform", "int", "intlog")
LOG_KINDS = ("loguniform", "intlog")
OPTIONS = ("step", "points")


@dataclass(frozen=True)
class Param:
    name: str
    kind: str
    low: float = 0.0
    high: float = 0.0
    values: tuple[Any, ...] = ()
    step: int = 1
    points: int = 5

    @property
    def log(self) -> bool:
        return self.kind in LOG_KINDS

    def distribution(self) -> BaseDistribution:
        if self.kind == "choice":
            return CategoricalDistribution(self.values)
        if self.kind in ("int", "intlog"):
            return IntDistribution(int(self.low), int(self.high), log=self.log, step=self.step)
        return FloatDistribution(float(self.low), float(self.high), log=self.log)

    def grid(self) -> list[Any]:
        """The values a grid search tries."""
        if self.kind == "choice":
            return list(self.values)
        if self.kind == "int":
            return list(range(int(self.low), int(self.high) + 1, self.step))
        space = np.geomspace if self.log else np.linspace
        values = [float(v) for v in space(self.low, self.high, self.points)]
        if self.kind == "intlog":
            return sorted({int(round(v)) for v in values})
        return values

    def extremes(self) -> list[Any]:
        """Values that between them show whether every value of the range gives a valid cell."""
        if self.kind == "choice":
            return list(self.values)
        cast = int if self.kind in ("int", "intlog") else float
        return [cast(self.low), cast(self.high)]

    def describe(self) -> str:
        if self.kind == "choice":
            return f"choice {list(self.values)}"
        return f"{self.kind} [{self.low:g}, {self.high:g}]"


def parse_space(table: Any, where: str) -> dict[str, Param]:
    if not isinstance(table, dict) or not table:
        raise ConfigError(f"{where}: [sweep.space] must be a non-empty table like "
                          "lr = {{ loguniform = [1e-4, 1e-1] }}")
    return {name: parse_param(name, spec, f"{where}: sweep.space.{name}") for name, spec in table.items()}


def parse_param(name: str, spec: Any, where: str) -> Param:
    if not isinstance(spec, dict):
        raise ConfigError(f"{where} must be a table like {{ loguniform = [1e-4, 1e-1] }}, got {spec!r}")
    kinds = [k for k in spec if k in KINDS]
    unknown = [k for k in spec if k not in KINDS and k not in OPTIONS]
    if unknown or len(kinds) != 1:
        raise ConfigError(f"{where} needs exactly one of {', '.join(KINDS)} (options: {', '.join(OPTIONS)}); "
                          f"got keys {sorted(spec)}")
    kind, bounds = kinds[0], spec[kinds[0]]
    options = {k: spec[k] for k in OPTIONS if k in spec}
    for option, value in options.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{where}: {option} must be an integer >= 1, got {value!r}")
    if kind == "choice":
        if not isinstance(bounds, list) or not bounds:
            raise ConfigError(f"{where}: choice must be a non-empty list of values, got {bounds!r}")
        return Param(name, kind, values=tuple(bounds))
    return Param(name, kind, *_bounds(kind, bounds, where), **options)


def _bounds(kind: str, bounds: Any, where: str) -> tuple[float, float]:
    integer = kind in ("int", "intlog")
    numbers = (int,) if integer else (int, float)
    if (not isinstance(bounds, list) or len(bounds) != 2
            or not all(isinstance(b, numbers) and not isinstance(b, bool) for b in bounds)):
        wanted = "integers" if integer else "numbers"
        raise ConfigError(f"{where}: {kind} must be [low, high] with two {wanted}, got {bounds!r}")
    low, high = bounds
    if not all(math.isfinite(b) for b in bounds):
        raise ConfigError(f"{where}: {kind} bounds must be finite, got {bounds!r}")
    if kind in LOG_KINDS and low <= 0:
        raise ConfigError(f"{where}: {kind} needs bounds > 0 (a log scale has no zero), got low = {low!r}; "
                          f"use uniform or int for ranges that include 0")
    if low >= high:
        raise ConfigError(f"{where}: the range [{low!r}, {high!r}] is empty; low must be < high")
    return low, high
