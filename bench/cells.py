"""Resolve matrix combinations into fully specified, validated cells."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from bench.budget import zero_step_problem
from bench.components import Component
from bench.errors import ConfigError
from bench.matrix import Matrix, closest
from bench.param_roles import probe_parameters
from bench.registry import Registry
from bench.schema import TRAINER_KEYS, check_trainer_values, type_error
from bench.shapes import shapes_only

# Which config key names the component of each kind.
KIND_KEYS = {"model": "model", "optimizer": "optimizer", "dataset": "dataset",
             "schedule": "schedule", "tokenizer": "tokenizer"}


@dataclass(frozen=True)
class Cell:
    id: str
    name: str
    config: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "config": self.config}


def component_params(config: dict[str, Any], component: Component) -> dict[str, Any]:
    """The subset of a resolved config that a component's factory takes."""
    return {key: config[key] for key in component.defaults}


# Keys that change how a cell is run or observed, never what it computes: changing them must not
# turn a finished (or half-finished) cell into a new one.
# halt_at_step only says how far this invocation trains: a sweep continues the same cell later.
# target_loss/target_ppl only say how the report reads the results.
# max_checkpoint_mb is a limit on what is accepted, not on what is computed.
OPERATIONAL_KEYS = frozenset({"checkpoint", "checkpoint_every", "memory_interval_ms", "peak_tflops", "halt_at_step",
                              "target_loss", "target_ppl", "max_checkpoint_mb"})


def cell_id(config: dict[str, Any]) -> str:
    identity = {k: v for k, v in config.items() if k not in OPERATIONAL_KEYS}
    blob = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def readable_name(config: dict[str, Any], axes: list[str], multiple_seeds: bool) -> str:
    parts = [str(config["model"])]
    if "n_layer" in config:
        parts.append(f"L{config['n_layer']}")
    parts.append(str(config["optimizer"]))
    for axis in axes:
        if axis not in ("model", "optimizer", "n_layer") and axis in config:
            parts.append(f"{axis}={config[axis]}")
    if multiple_seeds:
        parts.append(f"seed{config['seed']}")
    return "-".join(parts)


def resolve_cells(matrix: Matrix, registry: Registry) -> list[Cell]:
    cells, seen = [], set()
    for index, combo in enumerate(matrix.combinations):
        for seed in matrix.seeds:
            where = f"matrix {matrix.name!r}, cell {index + 1} ({_describe(combo)})"
            config = resolve_config({**matrix.defaults, **combo, "seed": seed}, registry, where)
            cell = Cell(cell_id(config), readable_name(config, matrix.axes, len(matrix.seeds) > 1), config)
            if cell.id not in seen:
                seen.add(cell.id)
                cells.append(cell)
    return cells


def _describe(combo: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in combo.items()) or "defaults"


def resolve_config(user: dict[str, Any], registry: Registry, where: str) -> dict[str, Any]:
    config = {name: key.default for name, key in TRAINER_KEYS.items()}
    config.update({k: v for k, v in user.items() if k in TRAINER_KEYS})
    _check_known_keys(user, registry, where)  # first: a misspelt `model` must not read as "no model given"
    for kind in ("model", "optimizer"):
        if config[kind] is None:
            raise ConfigError(f"{where}: no {kind} given; add `{kind} = \"...\"` to [defaults] or [matrix]")
    components = {kind: registry.get(kind, config[key]) for kind, key in KIND_KEYS.items()
                  if kind != "tokenizer"}
    if "tokens" in components["dataset"].tags:
        config["tokenizer"] = None  # the corpus is already token ids
    else:
        components["tokenizer"] = registry.get("tokenizer", config["tokenizer"])

    for component in components.values():
        for key, default in component.defaults.items():
            if key in TRAINER_KEYS:
                continue
            value = user.get(key, default)
            problem = type_error(key, value, default)
            if problem:
                raise ConfigError(f"{where}: {problem}")
            config[key] = value

    check_trainer_values(config, where)
    _check_buildable(config, components, where)
    return config


def _check_known_keys(user: dict[str, Any], registry: Registry, where: str) -> None:
    """Every key must mean something to bench or to some registered component; keys that another
    component understands (e.g. `tie_weights` in a grid that mixes models) are simply not part of
    this cell."""
    known_anywhere = set(TRAINER_KEYS)
    for kind in KIND_KEYS:
        for entry in registry.entries(kind):
            known_anywhere.update(entry.component.defaults)
    for key in user:
        if key not in known_anywhere:
            raise ConfigError(f"{where}: unknown key {key!r}{closest(key, known_anywhere)}")


def _check_buildable(config: dict[str, Any], components: dict[str, Component], where: str) -> None:
    """Build the model's shapes (no memory, no time, no initialisers) and the optimizer and schedule on a
    dummy parameter, so impossible hyperparameters fail here and not hours into a matrix."""
    try:
        with shapes_only():
            model = components["model"].factory(_probe_vocab(config, components),
                                                **component_params(config, components["model"]))
        _check_weights_size(config, components, model)
        limit = getattr(model, "context_length", None)
        if limit is not None and config["seq_len"] > limit:
            raise ValueError(f"seq_len {config['seq_len']} exceeds the model's context length {limit}; "
                             f"lower seq_len or raise n_positions")
        no_steps = zero_step_problem(config, model.flops_per_token(config["seq_len"]))
        if no_steps:
            raise ValueError(no_steps)
        components["optimizer"].factory(probe_parameters(), lr=config["lr"], device_type="cpu",
                                        **component_params(config, components["optimizer"]))
        total = config["max_steps"] or 10**9
        components["schedule"].factory(lr=config["lr"], total_steps=total,
                                       **component_params(config, components["schedule"]))
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def weights_bytes(model: Any) -> int:
    """Bytes of the model's weights as best.pt stores them: each parameter once (tied ones share
    storage) plus buffers, at their own dtype. Works on shapes-only (meta) models."""
    tensors = list(model.parameters()) + list(model.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


def _check_weights_size(config: dict[str, Any], components: dict[str, Component], model: Any) -> None:
    limit = config.get("max_checkpoint_mb") or 0
    if not limit:
        return
    if "tokenizer" in components:  # the probe vocabulary would understate a text model's embeddings
        tokenizer = components["tokenizer"]
        vocab = tokenizer.factory(**component_params(config, tokenizer)).vocab_size
        with shapes_only():
            model = components["model"].factory(vocab, **component_params(config, components["model"]))
    size = weights_bytes(model)
    if size > limit * 1e6:
        raise ValueError(f"the model's weights take {size / 1e6:.1f} MB, over max_checkpoint_mb = {limit:g}; "
                         f"shrink the model (n_embd, n_layer, vocabulary) or raise max_checkpoint_mb")


def _probe_vocab(config: dict[str, Any], components: dict[str, Component]) -> int:
    # The real vocabulary is known once data is loaded; any positive size shows whether the
    # architecture's own hyperparameters are consistent.
    return int(config.get("vocab_size") or 256)
