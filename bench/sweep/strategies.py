"""Search strategies as generators: each yields the next request (run a trial cell, or prune
one) and receives the outcome, so one driver can interleave the groups of a fair comparison
and a strategy never touches the runner or the result store.

Every strategy is a deterministic function of its stored proposals and the outcomes it is
sent: replayed after a restart, it asks for the same cells in the same order.
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
Strategy = Generator[Request, Outcome, None]


@dataclass
class GroupContext:
    spec: SweepSpec
    trials: GroupTrials
    exhausted: Callable[[], bool]  # True once the group's FLOP, time or cost budget is spent


def distributions(spec: SweepSpec) -> dict[str, BaseDistribution]:
    if spec.strategy == "lr-range":
        return {"lr": LR_RANGE_DISTRIBUTION}
    return {name: param.distribution() for name, param in spec.space.items()}


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
    """grid, random, quasirandom, tpe: one full-length trial per proposal until the budget ends."""
    spec = ctx.spec
    limit = spec.trials or None
    if spec.strategy == "grid":
        limit = min(limit or grid_size(spec), grid_size(spec))
    make = _sampler_factory(ctx, spec.strategy)
    # Impossible proposals (over max_checkpoint_mb, heads not dividing the width) do not use up the
    # budget; the cap on them ends a search whose space is mostly impossible.
    count, invalid, invalid_cap = 0, 0, max(10, 3 * (limit or 0))
    while (limit is None or count < limit) and not ctx.exhausted() and invalid < invalid_cap:
        number, params = ctx.trials.propose(make=make)
        outcome = yield Run(number, params)
        ctx.trials.finish(number, outcome)
        if outcome.status == "invalid":
            invalid += 1
        else:
            count += 1


def halving(ctx: GroupContext) -> Strategy:
    """Hyperband (every bracket) or successive halving (one bracket), Li et al.'s Algorithm 1.

    Rung i of a bracket trains each live configuration to r_i units of ``resource_steps`` steps
    (the cell halts there, validated and checkpointed), ranks them by validation loss and keeps
    the best n_(i+1); the others are pruned. Survivors resume from their checkpoint.
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
            results = []
            for number, params in live:
                if ctx.exhausted():
                    return
                ctx.trials.tag(number, bracket=bracket.s, rung=i)
                results.append((number, params, (yield Run(number, params, halt))))
            if i == len(bracket.rungs) - 1:
                for number, _, outcome in results:
                    ctx.trials.finish(number, outcome)
                break
            live = yield from _promote(ctx, results, bracket.rungs[i + 1].configs)


def _promote(ctx: GroupContext, results: list, keep: int) -> Generator[Request, Outcome, list]:
    """Keep the ``keep`` best healthy results; prune the other healthy ones, close the failed ones."""
    healthy = [r for r in results if r[2].status in ("paused", "ok") and _finite(r[2].metric)]
    ranked = sorted(healthy, key=lambda r: (r[2].metric, r[0]))
    kept = {r[0] for r in ranked[:keep]}
    for number, params, outcome in results:
        if number in kept:
            continue
        if any(number == r[0] for r in healthy):
            outcome = yield Prune(number, params, outcome)
            ctx.trials.finish(number, outcome, pruned=True)
        else:
            ctx.trials.finish(number, outcome)
    return [(r[0], r[1]) for r in ranked[:keep]]


def lr_range(ctx: GroupContext) -> Strategy:
    """Double lr from ``lr_start`` until a cell diverges, then try ``fractions`` of that lr."""
    spec, options = ctx.spec, ctx.spec.options
    limit = spec.trials or None
    tried: list[float] = []

    def room() -> bool:
        return (limit is None or len(tried) < limit) and not ctx.exhausted()

    lr, divergent = float(options["lr_start"]), None
    while room() and lr <= options["lr_max"]:
        outcome = yield from _fixed_trial(ctx, lr)
        tried.append(lr)
        if outcome.status == "diverged":
            divergent = lr
            break
        lr *= options["lr_factor"]
    if divergent is None:
        return
    for fraction in options["fractions"]:
        value = divergent * fraction
        if room() and not any(math.isclose(value, t, rel_tol=1e-9) for t in tried):
            yield from _fixed_trial(ctx, value)
            tried.append(value)


def _fixed_trial(ctx: GroupContext, lr: float) -> Generator[Request, Outcome, Outcome]:
    number, params = ctx.trials.propose(fixed={"lr": lr})
    outcome = yield Run(number, params)
    ctx.trials.finish(number, outcome)
    return outcome


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)
