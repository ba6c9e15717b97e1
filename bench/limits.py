"""Sizes no run can reach, refused with one line before anything is built or allocated.

* cells: a matrix expands to at most :data:`MAX_CELLS` cells (axes x seeds, counted without
  building the grid, before ``exclude``) unless its top-level ``max_cells`` raises the limit;
* seeds: every seed is an integer ``torch.manual_seed`` accepts;
* steps: a cell plans at most :data:`MAX_STEPS` optimizer steps;
* modules: building a model's shapes stops past :data:`MAX_MODULES` submodules and parameters (``n_layer = 1e9``
  would otherwise build for hours);
* memory: a cell whose weights, gradients and optimizer state alone exceed the device's memory,
  or whose whole estimate (see :mod:`bench.training.footprint`) exceeds :data:`ACTIVATION_SLACK`
  times it, cannot fit. The activation term is an order-of-magnitude figure, hence the slack:
  only what is surely too large is refused; what merely exceeds the free memory is a warning.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any, Iterator

import torch

from bench.errors import ConfigError
from bench.schema import SEED_RANGE

MAX_CELLS = 1000
MAX_STEPS = 10**12  # 30 years at 1 ms per step
MAX_MODULES = 20_000  # a 96-layer GPT-3 has about 2,000; building 20,000 takes seconds
ACTIVATION_SLACK = 4


def check_cell_count(axes: dict[str, list], include: list, seeds: list, limit: Any, where: str) -> None:
    """Refuse a grid larger than ``limit`` (default :data:`MAX_CELLS`); arithmetic only, no grid."""
    if limit is None:
        limit = MAX_CELLS
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ConfigError(f"{where}: max_cells must be a positive integer, got {limit!r}")
    combinations = math.prod(len(values) for values in axes.values()) if axes else 0
    count = (combinations + len(include) or 1) * len(seeds)
    if count > limit:
        shape = " x ".join([*(f"{len(v)} {k}" for k, v in axes.items()),
                            *([f"+{len(include)} include"] if include else []), f"{len(seeds)} seeds"])
        raise ConfigError(f"{where}: the matrix expands to up to {count:,} cells ({shape}), over the limit of "
                          f"{limit:,}; shrink it, or add max_cells = {count} at its top if you mean it")


def seed_problem(seed: int) -> str | None:
    low, high = SEED_RANGE
    if not low <= seed <= high:
        return f"seed {seed} is outside what torch.manual_seed accepts ({low} to {high}); use a smaller seed"
    return None


def steps_problem(total_steps: int) -> str | None:
    if total_steps > MAX_STEPS:
        return (f"the cell plans {total_steps:.3g} optimizer steps, over the limit of {MAX_STEPS:.0e} (30 years "
                "at 1 ms per step); lower max_steps, epochs or steps_per_epoch")
    return None


class TooManyModules(ValueError):
    """A ValueError, so a model factory's build under :func:`module_limit` reads as the matrix's fault."""


@contextlib.contextmanager
def module_limit(limit: int = MAX_MODULES) -> Iterator[None]:
    """Stop a model build once it has registered more than ``limit`` submodules and parameters
    (``nn.LSTM(num_layers=...)`` registers parameters, a ModuleList of blocks registers modules)."""
    count = 0

    def counted(*_: Any) -> None:
        nonlocal count
        count += 1
        if count > limit:
            raise TooManyModules(f"the model has more than {limit:,} submodules and parameter tensors; check "
                                 "n_layer and the other sizes")

    module = torch.nn.modules.module
    handles = [module.register_module_module_registration_hook(counted),
               module.register_module_parameter_registration_hook(counted)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def device_bytes(device: torch.device) -> int | None:
    """All the memory of the device: CUDA's total, else the machine's (or its cgroup's, if smaller)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    sizes = []
    try:
        with open("/proc/meminfo") as handle:
            sizes += [int(line.split()[1]) * 1024 for line in handle if line.startswith("MemTotal:")]
    except OSError:
        pass
    try:
        sizes.append(int(Path("/sys/fs/cgroup/memory.max").read_text().strip()))
    except (OSError, ValueError):  # no cgroup v2, or "max"
        pass
    return min(sizes) if sizes else None


def fit_problem(estimate: dict[str, int], total: int | None, device: torch.device) -> str | None:
    """Why the estimated training memory cannot fit the device, or None."""
    if total is None:
        return None
    gib = 1 << 30
    fixed = estimate["weights"] + estimate["gradients"] + estimate["optimizer_state"]
    if fixed <= total and estimate["total"] <= ACTIVATION_SLACK * total:
        return None
    return (f"training needs about {estimate['total'] / gib:,.1f} GiB (weights, gradients and optimizer state "
            f"{fixed / gib:,.1f}, activations {estimate['activations'] / gib:,.1f}) but the {device.type} device has "
            f"{total / gib:,.1f} GiB; lower batch_size (grad_accum keeps the effective batch), seq_len or the "
            "model's sizes")


def vocab_size(config: dict[str, Any], registry: Any) -> int:
    """The cell's real vocabulary: its tokenizer's, or ``vocab_size`` for a dataset of token ids."""
    if config["tokenizer"] is None:
        return int(config["vocab_size"])
    return registry.get("tokenizer", config["tokenizer"]).build(config).vocab_size


def refuse_what_cannot_fit(configs: list[tuple[str, dict[str, Any]]], registry: Any, device: torch.device) -> None:
    """ConfigError (one line, exit 2) for the first (name, config) whose training surely cannot fit the
    device's memory; only shapes are built (no memory, no data). A token dataset that does not state
    its vocabulary is estimated with 256 tokens (the vocabulary is known only once data is loaded)."""
    from bench.shapes import shapes_only
    from bench.training.footprint import estimate_training_bytes

    total = device_bytes(device)
    for name, config in configs:
        try:
            vocab = vocab_size(config, registry) if config["tokenizer"] or "vocab_size" in config else 256
            with shapes_only():
                params = registry.get("model", config["model"]).build(config, vocab).parameter_counts()["total"]
        except Exception:  # noqa: BLE001 - a plugin that cannot say: the run reports it as that cell's failure
            continue
        problem = fit_problem(estimate_training_bytes(config, params, vocab), total, device)
        if problem:
            raise ConfigError(f"{name}: {problem}")
