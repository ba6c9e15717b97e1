"""What a sweep plans to train: trials and optimizer steps per study, the final seeds, and what
bounds a search whose length a budget decides. ``bench run --dry-run`` prints it before anything
trains; the driver says the time left from it after each round. One planner for both.

Steps are counted as the runner trains them: a Hyperband/ASHA configuration promoted to the next
rung resumes its cell, so it trains each rung's extra steps once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.budget import planned_steps, train_split_tokens
from bench.eta import PlannedWork, format_duration
from bench.matrix import Matrix
from bench.registry import Registry
from bench.sweep.groups import Group, flops_per_token, probe_values, trial_cell
from bench.sweep.spec import SweepSpec
from bench.sweep.strategies import grid_size


@dataclass(frozen=True)
class StudyWork:
    label: str
    trials: int | None  # configurations the study plans; None: until its budget ends
    trial_steps: int  # steps of one trial at full length
    steps: int | None  # steps all its trials train at most; None when a budget decides
    upper_bound: bool  # a pruner (or ASHA's ranking) may stop trials before the plan's steps


@dataclass(frozen=True)
class SweepWork:
    studies: list[StudyWork]
    final_runs: int  # final-seed cells after the search
    final_steps: int  # steps of all of them

    @property
    def trials(self) -> int | None:
        counts = [s.trials for s in self.studies]
        return None if None in counts else sum(c for c in counts if c is not None)

    @property
    def steps(self) -> int | None:
        """Steps the whole sweep plans, final seeds included; None when a budget decides its length."""
        steps = [s.steps for s in self.studies]
        return None if None in steps else sum(s for s in steps if s is not None) + self.final_steps

    @property
    def upper_bound(self) -> bool:
        return any(s.upper_bound for s in self.studies)


def planned_trials(spec: SweepSpec) -> int | None:
    """How many configurations a study tries; None when only a budget (or lr-range's first
    divergence) ends it."""
    if spec.strategy in ("hyperband", "successive-halving"):
        return sum(b.configs for b in spec.brackets())
    if spec.strategy == "grid":
        return min(spec.trials or grid_size(spec), grid_size(spec))
    return spec.trials or None


def study_steps(spec: SweepSpec, trials: int | None, trial_steps: int) -> int | None:
    """Steps a study's trials train at most, each promotion counted as the extra steps it trains."""
    if trials is None:
        return None
    unit = spec.options["resource_steps"]
    if spec.strategy in ("hyperband", "successive-halving"):
        return unit * sum(_rung_units([r.configs for r in b.rungs], [r.resource for r in b.rungs])
                          for b in spec.brackets())
    if spec.strategy == "asha":
        # Rung k promotes at most the top 1/eta of its results, so it holds at most trials // eta^k.
        ladder = [r.resource for r in spec.brackets()[0].rungs]
        counts = [trials // spec.options["eta"] ** k for k in range(len(ladder))]
        return unit * _rung_units(counts, ladder)
    return trials * trial_steps


def _rung_units(configs: list[int], resources: list[int]) -> int:
    """Resource units trained when rung i runs configs[i] cells from the previous rung's resource to its own."""
    return sum(n * (r - before) for n, r, before in zip(configs, resources, [0, *resources]))


def trial_steps(matrix: Matrix, spec: SweepSpec, group: Group, registry: Registry, params: dict[str, Any],
                cache: dict, **cell: Any) -> int:
    """Planned steps of the trial (``cell``: a final seed's, with ``final=True, seed=...``) with ``params``."""
    config = trial_cell(matrix, spec, group, params, registry, **cell).config
    fpt = int(flops_per_token(config, registry)) if config["max_flops"] else 0
    return planned_steps(config, train_split_tokens(config, registry, cache), fpt)[1]


def plan_study(matrix: Matrix, group: Group, label: str, spec: SweepSpec, registry: Registry, cache: dict,
               sample: dict[str, Any] | None = None) -> StudyWork:
    """The study's planned work; a trial's length is read from ``sample`` (default: the space's lows)."""
    steps = trial_steps(matrix, spec, group, registry, probe_values(spec)[0] if sample is None else sample, cache)
    trials = planned_trials(spec)
    bounded = spec.strategy == "asha" or spec.options["pruner"] != "none"
    return StudyWork(label, trials, steps, study_steps(spec, trials, steps), bounded)


def final_runs(matrix: Matrix, spec: SweepSpec, groups: list[Group], registry: Registry,
               cache: dict) -> dict[str, list[int]]:
    """Planned steps of each group's final-seed runs (the winner's length: the space's lows stand in)."""
    return {group.label: [trial_steps(matrix, spec, group, registry, probe_values(spec)[0], cache, final=True,
                                      seed=seed) for seed in spec.final_seeds] for group in groups}


def plan_sweep(matrix: Matrix, spec: SweepSpec, studies: list[tuple[Group, str, SweepSpec]],
               registry: Registry) -> SweepWork:
    cache: dict = {}
    works = [plan_study(matrix, group, label, study, registry, cache) for group, label, study in studies]
    groups = list({group.label: group for group, _, _ in studies}.values())
    final = [steps for runs in final_runs(matrix, spec, groups, registry, cache).values() for steps in runs]
    return SweepWork(works, len(final), sum(final))


def open_ended_bound(spec: SweepSpec, left: str = "") -> str:
    """What ends a search whose length no plan fixes, in words; ``left``: what its budgets have left."""
    if left:
        return f"{spec.strategy} runs until its budget ends ({left} left)"
    units = {"max_time": "{:g} s of training per group", "max_flops": "{:.3g} FLOPs per group",
             "max_cost": "${:g} per group"}
    limits = [f"{key} {units[key].format(value)}" for key, value in spec.budgets.items() if key in units]
    if spec.options.get("max_total_flops"):
        limits.append(f"max_total_flops {spec.options['max_total_flops']:.3g} FLOPs over all groups")
    if limits:
        return f"{spec.strategy} runs until its budget ends ({', '.join(limits)})"
    if spec.strategy == "lr-range":
        return "lr-range runs until a trial diverges, then tries fractions of that lr"
    return f"{spec.strategy} has no fixed number of trials"


def progress_line(work: SweepWork, eta: PlannedWork, settled: int, bound: str, budget_note: str = "") -> str:
    """The line said after each round: trials settled of planned, and the time the plan has left at the
    speed so far; for a search a budget ends, ``bound`` (what is left of it) instead of a time."""
    head = f"sweep: {settled}/{work.trials} trials settled" if work.trials is not None else \
        f"sweep: {settled} trials settled"
    rate = eta.rate()
    speed = f"{rate:.1f} steps/s so far" if rate else "nothing trained yet"
    if work.steps is None:
        return f"{head}, time left not fixed: {bound} ({speed})"
    seconds, left = eta.seconds_left(), eta.steps_left() or 0
    final = ", final seeds included" if work.final_runs else ""
    if seconds is None:
        return f"{head}, {left:,.0f} planned steps left{final} ({speed})"
    about = "up to about" if work.upper_bound else "about"
    return (f"{head}, {about} {format_duration(seconds)} to go ({left:,.0f} planned steps left{final}, "
            f"at the {speed}){budget_note}")
