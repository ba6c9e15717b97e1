"""Search strategies as generators: each yields its next batch of requests (run a trial cell, or
prune one) and receives their outcomes, in the same order, so one driver can interleave the
groups of a fair comparison, train a batch's cells in parallel, and a strategy never touches the
runner or the result store.

Every strategy is a deterministic function of its stored proposals and the outcomes it is
sent: replayed after a restart, it asks for the same cells in the same order. What makes up a
batch is the strategy's and the sweep's (``batch``) business, never the executor's, so the
proposals do not depend on how many cells train at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Generator

import optuna
from optuna.distributions import BaseDistribution, FloatDistribution

from bench.sweep.spec import PLANNED, SAMPLED, SweepSpec
from bench.sweep.trials import GroupTrials, Outcome, make_sampler

# lr-range proposes its own values; Optuna only records them.
LR_RANGE_DISTRIBUTION = FloatDistribution(1e-12, 1e12, log=True)


@dataclass
class Run:
    number: int
    params: dict[str, Any]
    halt_at_step: int = 0  # 0: train the cell to its end


@dataclass
class Prune:
    number: int
    params: dict[str, Any]
    outcome: Outcome  # the rung result that lost


Request = Run | Prune
Batch = list[Request]
Strategy = Generator[Batch, list[Outcome], None]


@dataclass
class GroupContext:
    spec: SweepSpec
    trials: GroupTrials
    exhausted: Callable[[], bool]  # True once the group's FLOP, time or cost budget is spent
    total_steps: int = 0  # steps a full trial trains (pruning decisions happen before it)
    eval_every: int = 0  # steps between the trials' evaluations


def make_pruner(spec: SweepSpec) -> optuna.pruners.BasePruner:
    """Optuna's pruner named by ``sweep.pruner``, judging each trial by its evaluations so far."""
    kind, startup = spec.options["pruner"], spec.options["pruner_startup_trials"]
    if kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=startup)
    if kind == "percentile":
        return optuna.pruners.PercentilePruner(25.0, n_startup_trials=startup)
    return optuna.pruners.SuccessiveHalvingPruner(reduction_factor=spec.options["eta"])


def pruning_steps(ctx: GroupContext) -> list[int]:
    """The steps where a pruned search pauses its trials and asks the pruner (never the last step)."""
    every = ctx.spec.options["prune_every"] or ctx.eval_every
    if not every or not ctx.total_steps:
        return []
    return list(range(every, ctx.total_steps, every))


def distributions(spec: SweepSpec) -> dict[str, BaseDistribution]:
    if spec.strategy == "lr-range":
        return {"lr": LR_RANGE_DISTRIBUTION}
    return {name: param.distribution() for name, param in spec.space.items()}


def batch_shapes_proposals(spec: SweepSpec) -> bool:
    """Whether ``batch`` changes what is proposed: TPE asks a batch's later trials before the earlier
    ones have results. Other samplers draw trial k the same whatever the batch, Hyperband asks a
    bracket's configurations before any of them trains, and lr-range batches fixed values only."""
    return spec.strategy == "tpe" and spec.options["batch"] > 1


def grid_size(spec: SweepSpec) -> int:
    return math.prod(len(p.grid()) for p in spec.space.values())


def strategy_for(ctx: GroupContext) -> Strategy:
    if ctx.spec.strategy in SAMPLED:
        return sampled(ctx)
    if ctx.spec.strategy == "asha":
        return asha(ctx)
    if ctx.spec.strategy in PLANNED:
        return halving(ctx)
    return lr_range(ctx)


def _sampler_factory(ctx: GroupContext, kind: str) -> Callable[[int], Any]:
    spec = ctx.spec
    return lambda number: make_sampler(kind, spec.seed, number, spec.space, spec.options)


def sampled(ctx: GroupContext) -> Strategy:
    """grid, random, quasirandom, tpe: ``batch`` full-length trials per round until the budget ends.

    A batch's trials are all asked, then trained, then told in trial-number order (Optuna's
    ask-and-tell); the budget is checked before each batch.
    """
    spec = ctx.spec
    limit = spec.trials or None
    if spec.strategy == "grid":
        limit = min(limit or grid_size(spec), grid_size(spec))
    make = _sampler_factory(ctx, spec.strategy)
    # Impossible proposals (over max_checkpoint_mb, heads not dividing the width) do not use up the
    # budget; the cap on them ends a search whose space is mostly impossible. A batch never goes
    # past either count, so it stops where one trial at a time would.
    count, invalid, invalid_cap = 0, 0, max(10, 3 * (limit or 0))
    while (limit is None or count < limit) and not ctx.exhausted() and invalid < invalid_cap:
        size = min(spec.options["batch"], invalid_cap - invalid, limit - count if limit else invalid_cap)
        proposals = [ctx.trials.propose(make=make) for _ in range(size)]
        if spec.options["pruner"] == "none":
            outcomes = yield [Run(number, params) for number, params in proposals]
            for (number, _), outcome in zip(proposals, outcomes):
                ctx.trials.finish(number, outcome)
        else:
            outcomes = yield from _pruned_batch(ctx, proposals)
        for outcome in outcomes:
            if outcome.status == "invalid":
                invalid += 1
            else:
                count += 1


def _pruned_batch(ctx: GroupContext, proposals: list) -> Generator[Batch, list[Outcome], list[Outcome]]:
    """Train a batch's trials in segments; after each, Optuna's pruner judges each trial on its
    evaluations so far (the driver reports every one to the study) and stops the losers."""
    pruner = make_pruner(ctx.spec)
    ctx.trials.first_live = min(number for number, _ in proposals)
    final: dict[int, Outcome] = {}
    live = list(proposals)
    for halt in [*pruning_steps(ctx), 0]:
        if not live:
            break
        outcomes = yield [Run(number, params, halt) for number, params in live]
        survivors: list = []
        losers: Batch = []
        for (number, params), outcome in zip(live, outcomes):
            if halt and outcome.status == "paused" and _finite(outcome.metric):
                if ctx.trials.should_prune(pruner, number, halt):
                    losers.append(Prune(number, params, outcome))
                else:
                    survivors.append((number, params))
                continue
            ctx.trials.finish(number, outcome)  # ended (or failed) before the next decision
            final[number] = outcome
        if losers:
            for request, closed in zip(losers, (yield losers)):
                ctx.trials.finish(request.number, closed, pruned=True)
                final[request.number] = closed
        live = survivors
    return [final[number] for number, _ in proposals]


def halving(ctx: GroupContext) -> Strategy:
    """Hyperband (every bracket) or successive halving (one bracket), Li et al.'s Algorithm 1.

    Rung i of a bracket trains each live configuration to r_i units of ``resource_steps`` steps
    (the cell halts there, validated and checkpointed), ranks them by validation loss and keeps
    the best n_(i+1); the others are pruned. Survivors resume from their checkpoint. A rung is one
    batch (its trials are independent until the ranking); the budget is checked before each rung.
    """
    spec = ctx.spec
    resource, unit = spec.options["max_resource"], spec.options["resource_steps"]
    make = _sampler_factory(ctx, spec.options["sampler"])
    for bracket in spec.brackets():
        live = []
        for _ in range(bracket.configs):
            if ctx.exhausted():
                return
            live.append(ctx.trials.propose(make=make))
        for i, rung in enumerate(bracket.rungs):
            halt = 0 if rung.resource >= resource else rung.resource * unit
            if ctx.exhausted():
                return
            for number, _ in live:
                ctx.trials.tag(number, bracket=bracket.s, rung=i)
            outcomes = yield [Run(number, params, halt) for number, params in live]
            results = [(number, params, outcome) for (number, params), outcome in zip(live, outcomes)]
            if i == len(bracket.rungs) - 1:
                for number, _, outcome in results:
                    ctx.trials.finish(number, outcome)
                break
            live = yield from _promote(ctx, results, bracket.rungs[i + 1].configs)


def asha(ctx: GroupContext) -> Strategy:
    """Asynchronous successive halving (Li et al., "A System for Massively Parallel Hyperparameter
    Tuning", MLSys 2020, Algorithm 2) over Hyperband's rungs r_k = R eta^(k - s_max).

    Each free slot of a batch takes the highest rung k with a configuration in the top 1/eta of the
    results rung k has so far and not yet promoted, and trains it on to rung k + 1; with none, it
    starts a new configuration at rung 0 (until ``trials`` configurations or the budget are used).
    Nothing waits for a full rung. A batch's jobs are chosen before any of them trains, from results
    in trial order, so a replay chooses the same. Configurations left below the top are pruned at the end.
    """
    spec = ctx.spec
    resource, unit, eta = spec.options["max_resource"], spec.options["resource_steps"], spec.options["eta"]
    ladder = [rung.resource for rung in spec.brackets()[0].rungs]
    top = len(ladder) - 1
    limit = spec.trials or None
    make = _sampler_factory(ctx, spec.options["sampler"])
    results: list[dict[int, Outcome]] = [{} for _ in ladder]
    promoted: list[set[int]] = [set() for _ in ladder]
    params: dict[int, dict[str, Any]] = {}
    started, invalid, finished = 0, 0, set()

    def next_job(busy: set[int]) -> tuple[int, int] | None:
        nonlocal started
        for k in range(top - 1, -1, -1):
            ranked = sorted(results[k].items(), key=lambda item: (item[1].metric, item[0]))
            for number, _ in ranked[:len(ranked) // eta]:
                if number not in promoted[k] and number not in busy:
                    promoted[k].add(number)
                    return number, k + 1
        if (limit is None or started < limit) and invalid < max(10, 3 * (limit or 0)):
            number, values = ctx.trials.propose(make=make)
            params[number] = values
            started += 1
            return number, 0
        return None

    while not ctx.exhausted():
        jobs: list[tuple[int, int]] = []
        while len(jobs) < spec.options["batch"]:
            job = next_job({n for n, _ in jobs})
            if job is None:
                break
            jobs.append(job)
        if not jobs:
            break
        for number, k in jobs:
            ctx.trials.tag(number, bracket="asha", rung=k)
        outcomes = yield [Run(n, params[n], 0 if ladder[k] >= resource else ladder[k] * unit) for n, k in jobs]
        for (number, k), outcome in zip(jobs, outcomes):
            if k < top and outcome.status == "paused" and _finite(outcome.metric):
                results[k][number] = outcome
                continue
            ctx.trials.finish(number, outcome)
            finished.add(number)
            if outcome.status == "invalid":
                invalid += 1
                started -= 1  # an impossible proposal does not use up the budget
    waiting = [(n, params[n], max((k for k in range(top) if n in results[k]), default=0)) for n in params
               if n not in finished and any(n in r for r in results)]
    losers: Batch = [Prune(n, values, results[k][n]) for n, values, k in waiting]
    if losers:
        for request, closed in zip(losers, (yield losers)):
            ctx.trials.finish(request.number, closed, pruned=True)


def _promote(ctx: GroupContext, results: list, keep: int) -> Generator[Batch, list[Outcome], list]:
    """Keep the ``keep`` best healthy results; prune the other healthy ones (one batch of bookkeeping,
    nothing trains), close the failed ones."""
    healthy = [r for r in results if r[2].status in ("paused", "ok") and _finite(r[2].metric)]
    ranked = sorted(healthy, key=lambda r: (r[2].metric, r[0]))
    kept = {r[0] for r in ranked[:keep]}
    losers = [r for r in healthy if r[0] not in kept]
    pruned = (yield [Prune(number, params, outcome) for number, params, outcome in losers]) if losers else []
    closed = dict(zip((r[0] for r in losers), pruned))
    for number, _, outcome in results:
        if number in closed:
            ctx.trials.finish(number, closed[number], pruned=True)
        elif number not in kept:
            ctx.trials.finish(number, outcome)
    return [(r[0], r[1]) for r in ranked[:keep]]


def lr_range(ctx: GroupContext) -> Strategy:
    """Double lr from ``lr_start`` until a cell diverges (one trial at a time: each step depends on
    the last), then try ``fractions`` of that lr, ``batch`` at a time."""
    spec, options = ctx.spec, ctx.spec.options
    limit = spec.trials or None
    tried: list[float] = []

    def room() -> int:
        left = limit - len(tried) if limit is not None else options["batch"]
        return 0 if ctx.exhausted() else max(0, left)

    lr, divergent = float(options["lr_start"]), None
    while room() and lr <= options["lr_max"]:
        outcome, = yield from _fixed_trials(ctx, [lr])
        tried.append(lr)
        if outcome.status == "diverged":
            divergent = lr
            break
        lr *= options["lr_factor"]
    if divergent is None:
        return
    queue: list[float] = []
    for value in (divergent * fraction for fraction in options["fractions"]):
        if not any(math.isclose(value, t, rel_tol=1e-9) for t in tried + queue):
            queue.append(value)
    while queue and room():
        size = min(options["batch"], room())
        chunk, queue = queue[:size], queue[size:]
        yield from _fixed_trials(ctx, chunk)
        tried += chunk


def _fixed_trials(ctx: GroupContext, lrs: list[float]) -> Generator[Batch, list[Outcome], list[Outcome]]:
    proposals = [ctx.trials.propose(fixed={"lr": lr}) for lr in lrs]
    outcomes = yield [Run(number, params) for number, params in proposals]
    for (number, _), outcome in zip(proposals, outcomes):
        ctx.trials.finish(number, outcome)
    return outcomes


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)
