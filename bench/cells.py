"""Resolve matrix combinations into fully specified, validated cells."""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from bench.budget import zero_step_problem
from bench.components import Component
from bench.errors import ConfigError
from bench.limits import module_limit, steps_problem
from bench.lm import LanguageModel
from bench.matrix import Matrix, closest
from bench.param_roles import probe_parameters
from bench.provenance import cell_provenance
from bench.registry import DuplicateComponentError, Registered, Registry, unknown_name_message
from bench.schema import TRAINER_KEYS, check_trainer_values, type_error
from bench.shapes import optimizer_probe, shapes_only

# Which config key names the component of each kind.
KIND_KEYS = {"model": "model", "optimizer": "optimizer", "dataset": "dataset",
             "schedule": "schedule", "tokenizer": "tokenizer"}


@dataclass(frozen=True)
class Cell:
    """A resolved cell. ``provenance`` (which distribution and version provided each component, and
    bench's and torch's versions) is recorded with its results but is not part of its id: an upgraded
    plugin makes an old result stale (see :mod:`bench.provenance`), not unreachable. ``problem`` is
    set when a plugin cannot build this cell; `bench run` records it as failed and trains the others."""

    id: str
    name: str
    config: dict[str, Any]
    provenance: dict[str, Any] = field(default_factory=dict, compare=False)
    problem: str | None = field(default=None, compare=False)

    def as_dict(self) -> dict[str, Any]:
        cell = {"id": self.id, "name": self.name, "config": self.config}
        return {**cell, "provenance": self.provenance} if self.provenance else cell


# Keys that change how a cell is run or observed, never what it computes: changing them must not
# turn a finished (or half-finished) cell into a new one.
# halt_at_step only says how far this invocation trains: a sweep continues the same cell later.
# target_loss/target_ppl only say how the report reads the results.
# max_checkpoint_mb is a limit on what is accepted, not on what is computed.
# trackers only copy what a cell logs to other tools.
OPERATIONAL_KEYS = frozenset({"checkpoint", "checkpoint_every", "checkpoint_async", "memory_interval_ms", "peak_tflops",
                              "halt_at_step", "target_loss", "target_ppl", "max_checkpoint_mb", "trackers"})


# Keys added after results were first stored, with the value that computes exactly what a cell
# computed before the key existed (divergence_margin only stops a run already worse than uniform
# guessing; tf32 only changes float32 matmuls on CUDA tensor cores). At these values a key stays out
# of the identity, so cells stored by earlier versions keep their ids and their finished results.
LATER_KEY_NEUTRALS: dict[str, Any] = {
    "eval_stride": 0, "max_flops": 0.0, "max_tokens": 0, "max_time": 0.0, "max_cost": 0.0, "cost_per_hour": 1.5,
    "divergence_margin": 5.0, "loss_chunk": 0, "compile": False, "tf32": True, "pin_memory": False,
    "decay_exclude": [], "val_windows": 0, "test_windows": 0,
}


def cell_id(config: dict[str, Any]) -> str:
    identity = {k: v for k, v in config.items()
                if k not in OPERATIONAL_KEYS and not (k in LATER_KEY_NEUTRALS and v == LATER_KEY_NEUTRALS[k])}
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


def given_name(name: str, seed: int, multiple_seeds: bool) -> str:
    """A cell named by its include's ``name``: ``{seed}`` in it becomes the seed; without it, several
    seeds get ``-seed<k>`` appended as :func:`readable_name` does."""
    if "{seed}" in name:
        return name.replace("{seed}", str(seed))
    return f"{name}-seed{seed}" if multiple_seeds else name


def resolve_cells(matrix: Matrix, registry: Registry) -> list[Cell]:
    """Every cell of the matrix. A mistake in the matrix raises ConfigError (the whole command stops);
    a plugin that cannot build a cell sets that cell's ``problem`` instead."""
    cells, seen = [], set()
    several = len(matrix.seeds) > 1
    for index, combo in enumerate(matrix.combinations):
        given = matrix.names[index] if matrix.names else None
        for seed in matrix.seeds:
            where = f"matrix {matrix.name!r}, cell {index + 1} ({_describe(combo)})"
            cell = resolve_cell({**matrix.defaults, **combo, "seed": seed}, registry, where,
                                _naming(given, matrix.axes, several))
            if cell.id not in seen:
                seen.add(cell.id)
                cells.append(cell)
    return cells


def _naming(given: str | None, axes: list[str], several: bool) -> Callable[[dict[str, Any]], str]:
    """How a matrix cell is named: by its include's ``name`` when it has one, else from its axes."""
    if given:
        return lambda config: given_name(given, config["seed"], several)
    return lambda config: readable_name(config, axes, several)


def resolve_cell(user: dict[str, Any], registry: Registry, where: str,
                 naming: Callable[[dict[str, Any]], str]) -> Cell:
    config, used, problems = _resolve(user, registry, where)
    if not problems:
        problems = _check_buildable(config, used, where)
    problem = f"{where}: {'; '.join(problems)}" if problems else None
    return Cell(cell_id(config), naming(config), config, cell_provenance(used), problem)


def _describe(combo: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in combo.items()) or "defaults"


def resolve_config(user: dict[str, Any], registry: Registry, where: str) -> dict[str, Any]:
    """The fully resolved config of one cell; any problem, the plugin's included, raises ConfigError."""
    cell = resolve_cell(user, registry, where, lambda config: "")
    if cell.problem:
        raise ConfigError(cell.problem)
    return cell.config


def _resolve(user: dict[str, Any], registry: Registry,
             where: str) -> tuple[dict[str, Any], dict[str, Registered], list[str]]:
    config = {name: key.default for name, key in TRAINER_KEYS.items()}
    config.update({k: v for k, v in user.items() if k in TRAINER_KEYS})
    _check_known_keys(user, registry, where)  # first: a misspelt `model` must not read as "no model given"
    for kind in ("model", "optimizer"):
        if config[kind] is None:
            raise ConfigError(f"{where}: no {kind} given; add `{kind} = \"...\"` to [defaults] or [matrix]")
    problems: list[str] = []
    kinds = [kind for kind in KIND_KEYS if kind != "tokenizer"]
    used = {kind: _lookup(registry, kind, config[KIND_KEYS[kind]], problems) for kind in kinds}
    if "tokens" in used["dataset"].component.tags:
        config["tokenizer"] = None  # the corpus is already token ids
    else:
        used["tokenizer"] = _lookup(registry, "tokenizer", config["tokenizer"], problems)
    config.update(_component_values(user, used, where))
    check_trainer_values(config, where)
    for tracker in config["trackers"]:  # a misspelt tracker stops the command, like a misspelt model
        if not registry.has("tracker", tracker):
            raise ConfigError(f"{where}: {unknown_name_message('tracker', tracker, registry.names('tracker'))}")
    return config, used, problems


def declared_defaults(config: dict[str, Any], registry: Registry) -> dict[str, Any]:
    """What each key of a resolved cell would be had the matrix not set it: the default its components
    declare, else the harness's (as :func:`_component_values` fills them). A key two of the cell's
    components declare with different defaults has none: the matrix must always set it."""
    defaults = {name: key.default for name, key in TRAINER_KEYS.items()}
    declared: dict[str, Any] = {}
    clashing: set[str] = set()
    for kind, key in KIND_KEYS.items():
        name = config.get(key)
        if name is None or not registry.has(kind, name):
            continue
        for option, default in registry.registrations(kind, name)[0].component.defaults.items():
            if option in declared and declared[option] != default:
                clashing.add(option)
            declared.setdefault(option, default)
    defaults.update(declared)
    return {k: v for k, v in defaults.items() if k not in clashing}


def unused_key_warnings(matrix: Matrix, cells: list[Cell], registry: Registry) -> list[str]:
    """One line per key the matrix sets that none of its cells uses: a key only some other component
    declares (AdEMAMix's ``ademamix_alpha`` on a matrix of Adam cells; the synthetic dataset's ``alpha``
    meant for another component) would otherwise be dropped without a word. A key used by at least
    one cell is fine: a grid's ``[defaults]`` are shared by cells of different components."""
    if any(cell.problem for cell in cells):
        return []  # a cell that cannot be built is the message; its config may be partial
    user = set(matrix.defaults).union(*matrix.combinations) - {"seed"}
    used = set().union(*(cell.config for cell in cells))
    lines = []
    for key in sorted(user - used):
        owners = [f"{kind} {entry.component.name!r}" for kind in KIND_KEYS for entry in registry.entries(kind)
                  if key in entry.component.defaults]
        lines.append(f"bench: warning: {key!r} is set in matrix {matrix.name!r} but none of its cells uses it "
                     f"(declared only by {', '.join(owners[:3])}{', ...' if len(owners) > 3 else ''}); "
                     "remove it, or use a component that reads it")
    return lines


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


def _lookup(registry: Registry, kind: str, name: str, problems: list[str]) -> Registered:
    """The registration of ``name``; a name two plugins register is this cell's problem, and the
    first registration stands in so the cell still resolves (and keeps the id it will have)."""
    try:
        return registry.entry(kind, name)
    except DuplicateComponentError as exc:
        problems.append(str(exc))
        return registry.registrations(kind, name)[0]


def _component_values(user: dict[str, Any], used: dict[str, Registered], where: str) -> dict[str, Any]:
    """One value per declared key: the matrix's if it sets the key, else the declaring components'
    default, which must agree when several declare it. A component's default for a harness key
    (an optimizer's ``lr``) replaces the harness default."""
    values: dict[str, Any] = {}
    declared_by: dict[str, str] = {}
    for kind, entry in used.items():
        component = entry.component
        for key, default in component.defaults.items():
            if key in user:
                value = user[key]
            elif key in values and values[key] != default:
                raise ConfigError(f"{where}: {declared_by[key]} and {kind} {component.name!r} both declare "
                                  f"{key!r}, with defaults {values[key]!r} and {default!r}; set {key} in the matrix")
            else:
                value = default
            problem = type_error(key, value, default) if key not in TRAINER_KEYS else None
            if problem:
                raise ConfigError(f"{where}: {problem}")
            values[key] = value
            declared_by.setdefault(key, f"{kind} {component.name!r}")
    return values


def _check_buildable(config: dict[str, Any], used: dict[str, Registered], where: str) -> list[str]:
    """Build the model's shapes (no memory, no time, no initialisers) and the optimizer and schedule on a
    dummy parameter, so impossible hyperparameters fail here and not hours into a matrix.

    A ValueError is the factory saying the matrix asks for something impossible: ConfigError, the
    command stops. Any other exception, or an object of the wrong type, is the plugin's fault:
    returned as this cell's problems, naming the plugin."""
    problems: list[str] = []
    steps = _explicit_steps(config)
    if steps_problem(steps):
        raise ConfigError(f"{where}: {steps_problem(steps)}")
    with module_limit():  # n_layer = 1e9 would build shapes for hours
        model = _build(used["model"], lambda c: c.build(config, _probe_vocab(config)), problems, where, meta=True)
    if model is not None:
        limit = getattr(model, "context_length", None)
        if limit is not None and config["seq_len"] > limit:
            raise ConfigError(f"{where}: seq_len {config['seq_len']} exceeds the model's context length {limit}; "
                              f"lower seq_len or raise n_positions")
        no_steps = zero_step_problem(config, _flops_per_token(model, used["model"], config, problems))
        if no_steps:
            raise ConfigError(f"{where}: {no_steps}")
        _check_weights_size(config, used, model, where)
    with optimizer_probe():
        _build(used["optimizer"], lambda c: c.build(config, probe_parameters(), lr=config["lr"], device_type="cpu"),
               problems, where)
    _build(used["schedule"], lambda c: c.build(config, lr=config["lr"], total_steps=config["max_steps"] or 10**9),
           problems, where)
    return problems


def _explicit_steps(config: dict[str, Any]) -> int:
    """The steps a cell plans when the matrix fixes them (max_steps, epochs x steps_per_epoch, a token
    budget); 0 when they depend on the train split's size."""
    tokens_per_step = config["batch_size"] * config["grad_accum"] * config["seq_len"]
    if config["max_tokens"]:
        return config["max_tokens"] // tokens_per_step
    return config["max_steps"] or config["epochs"] * config["steps_per_epoch"]


def weights_bytes(model: Any) -> int:
    """Bytes of the model's weights as best.pt stores them: each parameter once (tied ones share
    storage) plus buffers, at their own dtype. Works on shapes-only (meta) models."""
    tensors = list(model.parameters()) + list(model.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


def _check_weights_size(config: dict[str, Any], used: dict[str, Registered], model: Any, where: str) -> None:
    """max_checkpoint_mb: a configuration whose weights exceed it is rejected before anything runs."""
    limit = config.get("max_checkpoint_mb") or 0
    if not limit:
        return
    if "tokenizer" in used:  # the probe vocabulary would understate a text model's embeddings
        vocab = used["tokenizer"].component.build(config).vocab_size
        with shapes_only():
            model = used["model"].component.build(config, vocab)
    size = weights_bytes(model)
    if size > limit * 1e6:
        raise ConfigError(f"{where}: the model's weights take {size / 1e6:.1f} MB, over max_checkpoint_mb = "
                          f"{limit:g}; shrink the model (n_embd, n_layer, vocabulary) or raise max_checkpoint_mb")


def _flops_per_token(model: Any, entry: Registered, config: dict[str, Any], problems: list[str]) -> int:
    """The model's FLOPs per token, asked only when a FLOP budget needs it."""
    if not config.get("max_flops"):
        return 0
    try:
        return int(model.flops_per_token(config["seq_len"]))
    except Exception as exc:  # noqa: BLE001 - the plugin's fault, this cell's problem
        problems.append(f"model {entry.component.name!r} from {entry.distribution}: flops_per_token failed: "
                        f"{type(exc).__name__}: {exc}".splitlines()[0][:400])
        return 0


# What each kind's factory must return, checked at resolve time.
_EXPECTED: dict[str, tuple[type | None, str]] = {
    "model": (LanguageModel, "a bench.LanguageModel"),
    "optimizer": (torch.optim.Optimizer, "a torch.optim.Optimizer"),
    "schedule": (None, "a callable step -> learning rate"),
}


def _build(entry: Registered, build: Callable[[Component], Any], problems: list[str], where: str,
           meta: bool = False) -> Any:
    name = f"{entry.kind} {entry.component.name!r} from {entry.distribution}"
    try:
        with shapes_only() if meta else contextlib.nullcontext():
            built = build(entry.component)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - a plugin bug becomes this cell's problem, not a traceback
        problems.append(f"{name} failed to build: {type(exc).__name__}: {exc}".splitlines()[0][:400])
        return None
    expected, description = _EXPECTED[entry.kind]
    if not (isinstance(built, expected) if expected is not None else callable(built)):
        problems.append(f"{name} returned {type(built).__module__}.{type(built).__qualname__}, "
                        f"not {description}; fix the plugin's factory")
        return None
    return built


def _probe_vocab(config: dict[str, Any]) -> int:
    # The real vocabulary is known once data is loaded; any positive size shows whether the
    # architecture's own hyperparameters are consistent.
    return int(config.get("vocab_size") or 256)
