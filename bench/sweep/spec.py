"""The ``[sweep]`` table of a matrix file, checked before anything is written."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from bench.errors import ConfigError
from bench.matrix import closest
from bench.sweep.plan import Bracket, bracket, hyperband
from bench.sweep.space import Param, parse_space

SAMPLED = ("grid", "random", "quasirandom", "tpe")
PLANNED = ("successive-halving", "hyperband")
STRATEGIES = SAMPLED + PLANNED + ("lr-range",)
BUDGETS = ("trials", "max_flops", "max_time", "max_cost")

# key -> (default, type check, requirement)
KEYS: dict[str, tuple[Any, Any, str]] = {
    "strategy": ("random", lambda v: v in STRATEGIES, f"one of {', '.join(STRATEGIES)}"),
    "seed": (0, lambda v: _is_int(v), "an integer"),
    "space": ({}, lambda v: isinstance(v, dict), "a table"),
    "trials": (0, lambda v: _is_int(v) and v >= 0, "an integer >= 0 (0: no limit on the count)"),
    "max_flops": (0.0, lambda v: _is_num(v) and v >= 0, "a number >= 0 (training FLOPs per group)"),
    "max_time": (0.0, lambda v: _is_num(v) and v >= 0, "a number >= 0 (training seconds per group)"),
    "max_cost": (0.0, lambda v: _is_num(v) and v >= 0, "a number >= 0 (dollars per group)"),
    "max_total_flops": (0.0, lambda v: _is_num(v) and v >= 0,
                        "a number >= 0 (training FLOPs all trials together may spend, each charged as it starts)"),
    "cost_per_hour": (1.50, lambda v: _is_num(v) and v > 0, "a number > 0 (dollars per device hour)"),
    "metric": ("best_val_loss", lambda v: isinstance(v, str) and v != "", "a summary field name"),
    "direction": ("minimize", lambda v: v in ("minimize", "maximize"), "'minimize' or 'maximize'"),
    "per": ([], lambda v: isinstance(v, list) and all(isinstance(k, str) for k in v), "a list of key names"),
    "final_seeds": ([], lambda v: (_is_int(v) and v >= 0) or (isinstance(v, list) and all(map(_is_int, v))),
                    "a list of seeds or a count"),
    "final_overrides": ({}, lambda v: isinstance(v, dict), "a table of keys for the final reruns, "
                        "e.g. { max_flops = 1e12 } (the winner with more budget)"),
    "batch": (1, lambda v: _is_int(v) and v >= 1, "an integer >= 1 (trials proposed and trained at once; "
              "set it to at least --jobs)"),
    "qmc": ("halton", lambda v: v in ("halton", "sobol"), "'halton' or 'sobol'"),
    "startup_trials": (4, lambda v: _is_int(v) and v >= 1, "an integer >= 1 (random trials before TPE)"),
    "sampler": ("random", lambda v: v in ("random", "quasirandom", "tpe"),
                "'random', 'quasirandom' or 'tpe' (how Hyperband draws configurations)"),
    "max_resource": (0, lambda v: _is_int(v) and v >= 0, "an integer >= 1 (R, in resource units)"),
    "eta": (3, lambda v: _is_int(v) and v >= 2, "an integer >= 2"),
    "resource_steps": (1, lambda v: _is_int(v) and v >= 1, "an integer >= 1 (optimizer steps per unit)"),
    "bracket": (-1, lambda v: _is_int(v) and v >= -1, "an integer s >= 0 (-1: the largest, s_max)"),
    "lr_start": (1e-4, lambda v: _is_num(v) and v > 0, "a number > 0"),
    "lr_factor": (2.0, lambda v: _is_num(v) and v > 1, "a number > 1"),
    "lr_max": (1e4, lambda v: _is_num(v) and v > 0, "a number > 0"),
    "fractions": ([0.75, 0.5, 0.33, 0.25, 0.1],
                  lambda v: isinstance(v, list) and v and all(_is_num(f) and 0 < f < 1 for f in v),
                  "a non-empty list of numbers in (0, 1)"),
}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


@dataclass
class SweepSpec:
    strategy: str
    seed: int
    space: dict[str, Param]
    trials: int
    max_flops: float
    max_time: float
    max_cost: float
    cost_per_hour: float
    metric: str
    direction: str
    per: list[str]
    final_seeds: list[int]
    final_overrides: dict[str, Any]
    options: dict[str, Any] = field(default_factory=dict)  # strategy settings (qmc, eta, lr_start, ...)

    @property
    def budgets(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in BUDGETS if getattr(self, k)}

    def brackets(self) -> list[Bracket]:
        """Hyperband's brackets, or successive halving's single bracket."""
        R, eta = self.options["max_resource"], self.options["eta"]
        if self.strategy == "hyperband":
            return hyperband(R, eta)
        s = self.options["bracket"]
        return [bracket(R, eta, s if s >= 0 else len(hyperband(R, eta)) - 1)]

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in KEYS if k not in ("space",) and hasattr(self, k)}
        out.update(self.options)
        out["space"] = {name: {"kind": p.kind, "log": p.log, "describe": p.describe()}
                        for name, p in self.space.items()}
        return out


def parse_sweep(raw: dict[str, Any], where: str) -> SweepSpec:
    for key in raw:
        if key not in KEYS:
            raise ConfigError(f"{where}: unknown key sweep.{key}{closest(key, KEYS)} (allowed: {', '.join(KEYS)})")
    values = {}
    for key, (default, check, requirement) in KEYS.items():
        value = raw.get(key, default)
        if not check(value):
            raise ConfigError(f"{where}: sweep.{key} = {value!r} is impossible; it must be {requirement}")
        values[key] = value
    strategy = values["strategy"]
    space = parse_space(values["space"], where) if strategy != "lr-range" else {}
    if strategy == "lr-range" and values["space"]:
        raise ConfigError(f"{where}: lr-range searches lr by itself; remove [sweep.space] or pick another strategy")
    _check_budget(strategy, values, where)
    seeds = values["final_seeds"]
    common = {k: values[k] for k in KEYS if k in SweepSpec.__dataclass_fields__ and k != "space"}
    common["final_seeds"] = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    options = {k: v for k, v in values.items() if k not in SweepSpec.__dataclass_fields__}
    return SweepSpec(space=space, options=options, **common)


def _check_budget(strategy: str, values: dict[str, Any], where: str) -> None:
    if strategy in PLANNED:
        if not values["max_resource"]:
            raise ConfigError(f"{where}: {strategy} needs sweep.max_resource (R, in units of resource_steps "
                              f"optimizer steps), e.g. max_resource = 27")
        if strategy == "successive-halving" and values["bracket"] >= 0:
            try:
                bracket(values["max_resource"], values["eta"], values["bracket"])
            except ValueError as exc:
                raise ConfigError(f"{where}: sweep.bracket: {exc}") from None
        return
    if strategy == "grid":
        return  # the grid itself bounds the search
    if not any(values[k] for k in BUDGETS) and not values["max_total_flops"]:
        raise ConfigError(f"{where}: a {strategy} sweep needs a budget: set sweep.trials, max_flops, max_time, "
                          f"max_cost or max_total_flops")
