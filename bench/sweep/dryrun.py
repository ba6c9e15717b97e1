"""`bench run --dry-run` on a sweep: every trial the sweep would train, with its planned steps and
estimated time, before anything is written.

Proposals that do not depend on results (random, quasirandom, grid, TPE's startup trials, the
configurations Hyperband and ASHA start with) are drawn exactly as the sweep will draw them, from
a throw-away in-memory Optuna study with the same samplers and seeds. Later TPE trials and promotions
depend on results and are listed as such. Time per step is measured, not guessed: each group's
first trial cell trains ``MIN_STEPS`` real steps (``bench estimate``'s rule: the slowest of steps
10-19, so the estimate errs high), in a temporary folder that is deleted. The totals (each study's,
and the sweep's with its final seeds) come from bench.sweep.work, the plan the running sweep's time
left is also said from.
"""

from __future__ import annotations

import sys
from typing import Any

import optuna
import torch
from tabulate import tabulate

from bench.errors import ConfigError
from bench.estimate import MIN_STEPS, measure_cell
from bench.matrix import Matrix
from bench.registry import Registry
from bench.sweep.groups import Group, trial_cell
from bench.sweep.spec import PLANNED, SweepSpec
from bench.sweep.strategies import distributions
from bench.sweep.trials import GroupTrials, make_sampler
from bench.sweep.work import StudyWork, final_runs, open_ended_bound, plan_study, planned_trials

SHOWN = 50  # trials listed per study; the rest are counted


def known_proposals(spec: SweepSpec) -> tuple[list[dict[str, Any]], int | None, str]:
    """The proposals known before any result, how many trials the study runs (None: until a budget
    ends), and what decides the rest."""
    kind = spec.options["sampler"] if spec.strategy in ("hyperband", "successive-halving", "asha") else spec.strategy
    if spec.strategy == "lr-range":
        return [], spec.trials or None, "lr doubles from lr_start until a trial diverges, then fractions of that lr"
    count = planned_trials(spec) or 0
    later = ""
    known = count
    if kind == "tpe":
        known = min(count or spec.options["startup_trials"], spec.options["startup_trials"])
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
    cache: dict = {}
    timed: dict[str, float] = {}
    works: list[tuple[StudyWork, float]] = []  # each study's plan and its group's seconds per step
    for group, label, study_spec in studies:
        proposals, count, later = known_proposals(study_spec)
        sample = proposals[0] if proposals else {k: p.extremes()[0] for k, p in study_spec.space.items()}
        if study_spec.strategy == "lr-range":
            sample = {"lr": study_spec.options["lr_start"]}
        try:
            work = plan_study(matrix, group, label, study_spec, registry, cache, sample)
        except ConfigError as exc:
            lines.append(f"{label}: first trial impossible: {exc}")
            continue
        if group.label not in timed:
            timed[group.label] = seconds_per_step(matrix, study_spec, group, registry, sample, device)
        per_step = timed[group.label]
        works.append((work, per_step))
        steps = work.trial_steps
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
        lines.append(f"  {study_total(work, per_step, study_spec)}")
    groups = list({g.label: g for g, _, _ in studies if g.label in timed}.values())
    return "\n".join(lines + total_lines(matrix, spec, groups, registry, cache, works, timed))


def study_total(work: StudyWork, per_step: float, spec: SweepSpec) -> str:
    if work.steps is None:
        return f"length not fixed: {open_ended_bound(spec)}"
    how = "promotions counted as the steps they add" if spec.strategy in PLANNED else "every trial at full length"
    return (f"{'at most ' if work.upper_bound else ''}{work.steps:,} steps, about {work.steps * per_step:,.0f} s "
            f"of training for this study ({how})")


def total_lines(matrix: Matrix, spec: SweepSpec, groups: list[Group], registry: Registry, cache: dict,
                works: list[tuple[StudyWork, float]], timed: dict[str, float]) -> list[str]:
    """The sweep's planned total: trials, steps and time of the searches and the final seeds."""
    finals = final_runs(matrix, spec, groups, registry, cache)
    fixed = [(w, per_step) for w, per_step in works if w.steps is not None]
    steps = sum(w.steps or 0 for w, _ in fixed) + sum(sum(runs) for runs in finals.values())
    seconds = (sum((w.steps or 0) * per_step for w, per_step in fixed)
               + sum(sum(runs) * timed[label] for label, runs in finals.items()))
    runs = sum(len(r) for r in finals.values())
    what = f"{sum(w.trials or 0 for w, _ in fixed)} trial(s)" + (f" + {runs} final-seed run(s)" if runs else "")
    bound = "at most " if any(w.upper_bound for w, _ in fixed) else ""
    line = f"planned total: {what}, {bound}{steps:,} steps, about {seconds / 60:,.1f} min of training"
    open_ended = [w.label for w, _ in works if w.steps is None]
    if open_ended and not fixed:
        line = f"planned total: not fixed, {open_ended_bound(spec)}"
        if runs:
            line += f"; then {runs} final-seed run(s) of {steps:,} steps, about {seconds / 60:,.1f} min of training"
    elif open_ended:
        line += f"; plus {', '.join(open_ended)}, whose length a budget decides"
    return [line, "(evaluation excluded; times from the timed steps, which err high)"]
