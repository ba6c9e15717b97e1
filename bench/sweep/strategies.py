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
        outcomes = yield [Run(number, params) for number, params in proposals]
        for (number, _), outcome in zip(proposals, outcomes):
            ctx.trials.finish(number, outcome)
            if outcome.status == "invalid":
                invalid += 1
            else:
                count += 1


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
