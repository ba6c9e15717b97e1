"""`bench run --dry-run` on a sweep: every trial the sweep would train, with its planned steps and
estimated time, before anything is written.

Proposals that do not depend on results (random, quasirandom, grid, TPE's startup trials, the
configurations Hyperband and ASHA start with) are drawn exactly as the sweep will draw them, from
a throw-away in-memory Optuna study with the same samplers and seeds. Later TPE trials and promotions
depend on results and are listed as such. Time per step is measured, not guessed: each group's
first trial cell trains ``MIN_STEPS`` real steps (``bench estimate``'s rule: the slowest of steps
10-19, so the estimate errs high), in a temporary folder that is deleted.
"""

from __future__ import annotations

import sys
from typing import Any

import optuna
import torch
from tabulate import tabulate

from bench.budget import planned_steps, train_split_tokens
from bench.errors import ConfigError
from bench.estimate import MIN_STEPS, measure_cell
from bench.matrix import Matrix
from bench.registry import Registry
from bench.sweep.groups import Group, flops_per_token, trial_cell
from bench.sweep.spec import SweepSpec
from bench.sweep.strategies import distributions, grid_size
from bench.sweep.trials import GroupTrials, make_sampler

SHOWN = 50  # trials listed per study; the rest are counted


def known_proposals(spec: SweepSpec) -> tuple[list[dict[str, Any]], int | None, str]:
    """The proposals known before any result, how many trials the study runs (None: until a budget
    ends), and what decides the rest."""
    kind = spec.options["sampler"] if spec.strategy in ("hyperband", "successive-halving", "asha") else spec.strategy
    if spec.strategy == "lr-range":
        return [], spec.trials or None, "lr doubles from lr_start until a trial diverges, then fractions of that lr"
    if spec.strategy in ("hyperband", "successive-halving"):
        count = sum(b.configs for b in spec.brackets())
    elif spec.strategy == "grid":
        count = min(spec.trials or grid_size(spec), grid_size(spec))
    else:
        count = spec.trials or 0
    later = ""
    known = count
    if kind == "tpe":
        known = min(count, spec.options["startup_trials"])
        later = f"trials {known} and on: TPE's choice from the results before them"
    trials = GroupTrials(optuna.storages.InMemoryStorage(), "dry-run", spec.direction, distributions(spec))
    make = (lambda number: make_sampler(kind, spec.seed, number, spec.space, spec.options))  # noqa: E731
    proposals = [trials.propose(make=make)[1] for _ in range(min(known, SHOWN) if known else min(SHOWN, 5))]
    return proposals, (count or None), later


def rung_steps(spec: SweepSpec) -> str:
    unit = spec.options["resource_steps"]
    ladder = [r.resource * unit for r in spec.brackets()[0].rungs]
    return " -> ".join(f"{s:,}" for s in ladder) + " if promoted"


def seconds_per_step(matrix: Matrix, spec: SweepSpec, group: Group, registry: Registry,
                     params: dict[str, Any], device: torch.device) -> float:
    cell = trial_cell(matrix, spec, group, params, registry)
    measured = measure_cell(cell, registry, device, steps=MIN_STEPS, say=lambda line: print(line, file=sys.stderr))
    return max(measured.step_times_s)  # the worst of steps 10-19, as bench estimate projects


def describe_trials(matrix: Matrix, spec: SweepSpec, studies: list[tuple[Group, str, SweepSpec]],
                    registry: Registry, device: torch.device) -> str:
    lines: list[str] = []
    total_s, cache = 0.0, {}  # type: ignore[var-annotated]
    timed: dict[str, float] = {}
    for group, label, study_spec in studies:
        proposals, count, later = known_proposals(study_spec)
        sample = proposals[0] if proposals else {k: p.extremes()[0] for k, p in study_spec.space.items()}
        if study_spec.strategy == "lr-range":
            sample = {"lr": study_spec.options["lr_start"]}
        try:
            config = trial_cell(matrix, study_spec, group, sample, registry).config
        except ConfigError as exc:
            lines.append(f"{label}: first trial impossible: {exc}")
            continue
        fpt = int(flops_per_token(config, registry)) if config["max_flops"] else 0
        _, steps = planned_steps(config, train_split_tokens(config, registry, cache), fpt)
        if group.label not in timed:
            timed[group.label] = seconds_per_step(matrix, study_spec, group, registry, sample, device)
        per_step = timed[group.label]
        planned = rung_steps(study_spec) if study_spec.strategy in ("hyperband", "successive-halving", "asha") \
            else f"{steps:,}"
        if study_spec.options["pruner"] != "none":
            planned += " (the pruner may stop it at an evaluation)"
        rows = [[n, ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(p.items())),
                 planned, f"{steps * per_step:,.1f}"] for n, p in enumerate(proposals)]
        lines.append(f"{label}: {count if count is not None else 'open-ended (budget)'} trial(s), "
                     f"{per_step * 1000:.1f} ms/step (worst of steps 10-19 of {MIN_STEPS} timed steps)")
        lines.append(tabulate(rows, headers=["trial", "values", "planned steps", "est. s (full length)"],
                              disable_numparse=True) if rows else "  (values chosen while the sweep runs)")
        if later:
            lines.append(f"  {later}")
        if count is not None and count > len(proposals):
            lines.append(f"  ... {count - len(proposals)} more trial(s) not listed")
        if count is not None:
            if study_spec.strategy == "hyperband":
                units = sum(r.configs * r.resource for b in study_spec.brackets() for r in b.rungs)
                total = units * study_spec.options["resource_steps"] * per_step
            else:
                total = count * steps * per_step
            total_s += total
            lines.append(f"  at most {total:,.0f} s of training for this study (every trial at full length)")
    if spec.final_seeds:
        lines.append(f"then {len(spec.final_seeds)} final seed(s) per group at full length")
    lines.append(f"estimated training time, upper bound: {total_s / 60:,.1f} min (+ final seeds; evaluation excluded)")
    return "\n".join(lines)
