"""A sweep's groups (one independent search per value of the ``per`` keys) and its trial cells.

Everything here is checked before the sweep writes anything: every group's base cell and the
extremes of every searched range must resolve into valid cells.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from bench.cells import KIND_KEYS, Cell, cell_id, resolve_config
from bench.errors import ConfigError
from bench.matrix import Matrix, closest
from bench.registry import Registry
from bench.schema import TRAINER_KEYS
from bench.shapes import shapes_only
from bench.sweep.spec import PLANNED, SweepSpec


@dataclass
class Group:
    label: str  # "optimizer=adam", or "all" without `per`
    key: dict[str, Any]  # the per keys' values
    base: dict[str, Any]  # the matrix defaults merged with this group's combination


def _format(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def fixed_keys(spec: SweepSpec) -> dict[str, Any]:
    """Keys the strategy itself sets on every trial cell."""
    if spec.strategy in PLANNED:
        # Every rung's cell is the same cell, trained to R units; rungs halt it on the way.
        return {"max_steps": spec.options["max_resource"] * spec.options["resource_steps"], "checkpoint": True}
    if spec.options.get("pruner", "none") != "none":
        return {"checkpoint": True}  # a trial pauses at each pruning decision and resumes if it survives
    return {}


def known_keys(registry: Registry) -> set[str]:
    known = set(TRAINER_KEYS)
    for kind in KIND_KEYS:
        for entry in registry.entries(kind):
            known.update(entry.component.defaults)
    return known


def build_groups(matrix: Matrix, spec: SweepSpec, registry: Registry, where: str) -> list[Group]:
    known = known_keys(registry)
    for key in spec.space:
        if key not in known:
            raise ConfigError(f"{where}: sweep.space searches unknown key {key!r}{closest(key, known)}; "
                              f"search a key listed by `bench list` or in bench/schema.py")
    for key in spec.per:
        if key in spec.space or (key == "lr" and spec.strategy == "lr-range"):
            raise ConfigError(f"{where}: sweep.per and the searched keys overlap on {key!r}; a key is either "
                              f"a group or searched")
    resolved = [resolve_config({**matrix.defaults, **combo, "seed": matrix.seeds[0], **probe_values(spec)[0],
                                **fixed_keys(spec)}, registry, f"{where}, base cell {i + 1}")
                for i, combo in enumerate(matrix.combinations)]
    for name in spec.per:
        if not any(name in config for config in resolved):
            raise ConfigError(f"{where}: sweep.per names {name!r}, which no cell has; use keys the cells have, "
                              f"e.g. optimizer or model")
    groups: dict[str, Group] = {}
    for combo, config in zip(matrix.combinations, resolved):
        values = {k: config.get(k) for k in spec.per}
        label = ",".join(f"{k}={_format(v)}" for k, v in values.items()) or "all"
        if label in groups:
            varying = sorted(k for k in matrix.axes if k not in spec.per)
            raise ConfigError(f"{where}: several matrix cells fall in sweep group {label!r}; each group searches "
                              f"one base cell: add {', '.join(varying) or 'the differing keys'} to sweep.per")
        groups[label] = Group(label, values, {**matrix.defaults, **combo})
    return list(groups.values())


def probe_values(spec: SweepSpec) -> list[dict[str, Any]]:
    """Parameter sets whose cells show whether every value of the space is valid: all lows, all
    highs, and each range's extremes with the others low."""
    if spec.strategy == "lr-range":
        return [{"lr": spec.options["lr_start"]}]
    lows = {name: p.extremes()[0] for name, p in spec.space.items()}
    highs = {name: p.extremes()[-1] for name, p in spec.space.items()}
    probes = [lows, highs]
    for name, param in spec.space.items():
        probes += [{**lows, name: value} for value in param.extremes()]
    return probes


def check_space(groups: list[Group], spec: SweepSpec, matrix: Matrix, registry: Registry, where: str,
                warn: Callable[[str], None]) -> list[dict]:
    """Resolve every group at every probe; return the configs (for data preflight).

    The all-lows probe must resolve: it catches unknown keys, wrong types and budgets that leave no
    step. Other corners may legitimately be impossible (a model over max_checkpoint_mb, heads that
    do not divide the width): the sweep then skips such proposals as ``invalid``, after a warning.
    """
    configs = []
    for group in groups:
        if spec.final_seeds and spec.final_overrides:
            configs.append(resolve_config({**group.base, **probe_values(spec)[0], **fixed_keys(spec),
                                           "seed": matrix.seeds[0], **spec.final_overrides}, registry,
                                          f"{where}, sweep group {group.label}, final_overrides"))
        for index, probe in enumerate(probe_values(spec)):
            shown = ", ".join(f"{k}={_format(v)}" for k, v in probe.items())
            user = {**group.base, **probe, **fixed_keys(spec), "seed": matrix.seeds[0]}
            try:
                configs.append(resolve_config(user, registry, f"{where}, sweep group {group.label} at {shown}"))
            except ConfigError as exc:
                if index == 0:
                    raise
                warn(f"warning: part of the search space is impossible, those trials will be skipped: {exc}")
    return configs


def trial_cell(matrix: Matrix, spec: SweepSpec, group: Group, params: dict[str, Any], registry: Registry, *,
               seed: int | None = None, halt_at_step: int = 0, final: bool = False) -> Cell:
    """The cell of one trial; ``final`` gives a final rerun's cell (``final_overrides`` applied)."""
    seed = matrix.seeds[0] if seed is None else seed
    user = {**group.base, **params, **fixed_keys(spec), "seed": seed, **(spec.final_overrides if final else {})}
    if halt_at_step:
        user["halt_at_step"] = halt_at_step
    shown = "-".join(f"{k}={_format(v)}" for k, v in sorted(params.items()))
    config = resolve_config(user, registry, f"matrix {matrix.name!r}, sweep group {group.label}, trial {shown}")
    name = trial_name(config, params)
    if final:
        name = final_name(name, seed, bool(spec.final_overrides))
    elif seed != matrix.seeds[0]:
        name += f"-seed{seed}"
    return Cell(cell_id(config), name, config)


def trial_name(config: dict[str, Any], params: dict[str, Any]) -> str:
    """A trial cell's name: model, optimizer and the searched values (``gpt1-adamw-lr=0.0125``)."""
    shown = "-".join(f"{k}={_format(v)}" for k, v in sorted(params.items()))
    return "-".join(p for p in (str(config["model"]), str(config["optimizer"]), shown) if p)


def final_name(trial_name: str, seed: int | str, overridden: bool) -> str:
    """A final rerun's name from its trial's (`bench report --best-config` names its cells the same way)."""
    return f"{trial_name}{'-final' if overridden else ''}-seed{seed}"


def flops_per_token(config: dict[str, Any], registry: Registry) -> float:
    """The model's own training FLOPs per token, from its shapes (no weights are allocated)."""
    model = registry.get("model", config["model"])
    if config.get("tokenizer") is None:
        vocab = int(config["vocab_size"])
    else:
        tokenizer = registry.get("tokenizer", config["tokenizer"])
        vocab = tokenizer.build(config).vocab_size
    with shapes_only():
        built = model.build(config, vocab)
    return float(built.flops_per_token(config["seq_len"]))


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
