"""Strategies driven with scripted outcomes (the runner is not involved), over real Optuna SQLite storage."""

import math

import optuna
import pytest

from bench.sweep.spec import parse_sweep
from bench.sweep.strategies import GroupContext, Prune, Run, distributions, strategy_for
from bench.sweep.trials import GroupTrials, Outcome, open_storage

SPACE = {"lr": {"loguniform": [1e-4, 1.0]}, "n_layer": {"int": [1, 4]}}


class Stop(Exception):
    """Stands for a SIGKILL in the middle of a trial."""


@pytest.fixture
def context():
    """Strategy logic needs no disk: Optuna's in-memory storage (the SQLite one is tested below)."""
    storage = optuna.storages.InMemoryStorage()

    def make(name, raw, where=None):
        spec = parse_sweep(raw, "m.toml")
        trials = GroupTrials(where or storage, name, spec.direction, distributions(spec))
        return GroupContext(spec, trials, lambda: False)
    return make


def loss(params):
    """A known landscape: best at lr = 0.01, deeper is slightly better."""
    return abs(math.log10(params["lr"]) + 2) - 0.01 * params.get("n_layer", 0)


def ok(request):
    return Outcome(f"c{request.number}", "ok", loss(request.params), 10)


def drive(ctx, evaluate=ok, kill_at=None, batches=None):
    """Every request the strategy makes, in order; ``batches`` collects each batch's size."""
    requests, strategy = [], strategy_for(ctx)
    batch = next(strategy, None)
    while batch is not None:
        if batches is not None:
            batches.append(len(batch))
        requests += batch
        if kill_at is not None and len(requests) >= kill_at:
            raise Stop
        try:
            batch = strategy.send([evaluate(request) for request in batch])
        except StopIteration:
            batch = None
    return requests


def params_of(requests):
    return [(r.number, r.params) for r in requests]


@pytest.mark.parametrize("strategy", ["random", "quasirandom", "tpe"])
def test_same_seed_same_proposals_different_seed_different(context, strategy):
    raw = {"strategy": strategy, "trials": 5, "seed": 3, "space": SPACE, "startup_trials": 3}
    first = params_of(drive(context("a", raw)))
    again = params_of(drive(context("b", raw)))
    other = params_of(drive(context("c", {**raw, "seed": 4})))
    assert len(first) == 5 and first == again
    assert first != other


@pytest.mark.parametrize("strategy", ["random", "quasirandom", "tpe"])
def test_killed_and_resumed_sweep_proposes_what_an_uninterrupted_one_does(context, strategy, tmp_path):
    raw = {"strategy": strategy, "trials": 5, "seed": 1, "space": SPACE, "startup_trials": 2}
    reference = params_of(drive(context("ref", raw)))
    with pytest.raises(Stop):  # killed while trial 2 trains: it was proposed, never finished
        drive(context("run", raw, open_storage(tmp_path)), kill_at=3)
    # A new process: the SQLite file is all that survived.
    # The strategy replays trials 0-2 from storage (the driver does not retrain finished cells).
    resumed = params_of(drive(context("run", raw, open_storage(tmp_path))))
    assert resumed == reference
    study = context("run", raw, open_storage(tmp_path)).trials.study
    assert len(study.trials) == 5 and all(t.state.is_finished() for t in study.trials)


def test_grid_visits_every_point_once(context):
    raw = {"strategy": "grid", "space": {"lr": {"loguniform": [1e-3, 1e-1], "points": 3}, "n_layer": {"int": [1, 2]}}}
    got = sorted((round(math.log10(p["lr"])), p["n_layer"]) for _, p in params_of(drive(context("s", raw))))
    assert got == [(-3, 1), (-3, 2), (-2, 1), (-2, 2), (-1, 1), (-1, 2)]


def test_budget_stops_proposals(context):
    ctx = context("s", {"strategy": "random", "max_time": 1.0, "space": SPACE})
    spent = []
    ctx.exhausted = lambda: len(spent) >= 3

    def evaluate(request):
        spent.append(request.number)
        return ok(request)

    assert len(drive(ctx, evaluate)) == 3


def test_hyperband_runs_the_plan_and_promotes_the_best(context):
    raw = {"strategy": "hyperband", "max_resource": 9, "eta": 3, "resource_steps": 10, "space": SPACE, "seed": 0}
    ctx = context("s", raw)
    requests = drive(ctx, evaluate=lambda r: Outcome(
        f"c{r.number}", "pruned" if isinstance(r, Prune) else ("paused" if r.halt_at_step else "ok"),
        loss(r.params), getattr(r, "halt_at_step", 0) or 90))
    runs = [r for r in requests if isinstance(r, Run)]
    # (halt step, how many runs) per rung, bracket by bracket: s=2: 9x1, 3x3, 1x9; s=1: 5x3, 1x9; s=0: 3x9.
    halts = [r.halt_at_step for r in runs]
    assert halts == [10] * 9 + [30] * 3 + [0] + [30] * 5 + [0] + [0] * 3
    first_rung = runs[:9]
    promoted = [r.number for r in runs[9:12]]
    best_three = sorted(first_rung, key=lambda r: loss(r.params))[:3]
    assert sorted(promoted) == sorted(r.number for r in best_three)
    pruned = {r.number for r in requests if isinstance(r, Prune)}
    assert len(pruned) == 6 + 2 + 4  # s=2 prunes 6 then 2; s=1 prunes 4
    states = [t.state.name for t in ctx.trials.study.trials]
    assert states.count("COMPLETE") == 1 + 1 + 3 and states.count("PRUNED") == 12


def test_lr_range_finds_the_divergence_boundary(context):
    ctx = context("s", {"strategy": "lr-range", "trials": 20, "lr_start": 0.01,
                             "fractions": [0.75, 0.5, 0.1]})
    boundary = 0.3  # every lr above it diverges

    def evaluate(request):
        lr = request.params["lr"]
        return Outcome(f"c{request.number}", "diverged" if lr > boundary else "ok", None if lr > boundary else lr)

    lrs = [r.params["lr"] for r in drive(ctx, evaluate)]
    doubling = [0.01 * 2**k for k in range(6)]  # 0.32 is the first above the boundary
    assert lrs[:6] == pytest.approx(doubling)
    # Then fractions of 0.32; 0.16 (= 0.5 x 0.32) was tried while doubling and is not repeated.
    assert lrs[6:] == pytest.approx([0.24, 0.032])
    # A diverged trial is the worst value for Optuna (TPE steers away), not an invisible failure.
    values = {t.params["lr"]: t.value for t in ctx.trials.study.trials}
    assert values[0.32] == math.inf and all(v < math.inf for lr, v in values.items() if lr <= boundary)
    largest_ok = max(lr for lr in lrs if lr <= boundary)
    assert largest_ok == pytest.approx(0.24) and min(lr for lr in lrs if lr > boundary) == pytest.approx(0.32)


def test_lr_range_stops_at_the_trials_budget(context):
    ctx = context("s", {"strategy": "lr-range", "trials": 3, "lr_start": 1e-3})
    assert len(drive(ctx)) == 3


def test_impossible_proposals_do_not_use_up_the_trials(context):
    ctx = context("s", {"strategy": "random", "trials": 3, "space": SPACE})

    def evaluate(request):  # deep models are over a (pretend) size cap
        status = "invalid" if request.params["n_layer"] >= 3 else "ok"
        return Outcome("", status) if status == "invalid" else ok(request)

    requests = drive(ctx, evaluate)
    assert sum(r.params["n_layer"] < 3 for r in requests) == 3
    assert len(requests) > 3  # this seed proposes some deep ones too


@pytest.mark.parametrize("strategy", ["random", "quasirandom", "grid"])
def test_a_batch_proposes_what_one_at_a_time_does(context, strategy):
    space = {"lr": {"loguniform": [1e-4, 1.0], "points": 4}, "n_layer": {"int": [1, 2]}}
    raw = {"strategy": strategy, "trials": 5, "seed": 2, "space": space}
    one, sizes = params_of(drive(context("one", raw))), []
    batched = params_of(drive(context("three", {**raw, "batch": 3}), batches=sizes))
    assert batched == one and sizes == [3, 2]


def test_tpe_asks_a_whole_batch_then_tells_it_in_trial_order(context, tmp_path):
    raw = {"strategy": "tpe", "trials": 6, "seed": 1, "space": SPACE, "startup_trials": 2, "batch": 2}
    told = []

    def evaluate(request):  # every trial of the batch is still running while the batch trains
        states = {t.number: t.state.name for t in ctx.trials.study.trials}
        told.append((request.number, states))
        return ok(request)

    ctx = context("a", raw)
    sizes = []
    reference = params_of(drive(ctx, evaluate, batches=sizes))
    assert sizes == [2, 2, 2] and [n for n, _ in reference] == list(range(6))
    assert told[2][1] == {0: "COMPLETE", 1: "COMPLETE", 2: "RUNNING", 3: "RUNNING"}
    # Killed in the middle of a batch (trial 3 of batch 2-3 running), resumed from the SQLite file alone.
    with pytest.raises(Stop):
        drive(context("run", raw, open_storage(tmp_path)), kill_at=4)
    assert params_of(drive(context("run", raw, open_storage(tmp_path)))) == reference


def test_hyperband_hands_over_each_rung_as_one_batch(context):
    raw = {"strategy": "hyperband", "max_resource": 9, "eta": 3, "resource_steps": 10, "space": SPACE, "seed": 0}
    sizes = []
    drive(context("s", raw), evaluate=lambda r: Outcome(
        f"c{r.number}", "pruned" if isinstance(r, Prune) else "paused", loss(r.params), 10), batches=sizes)
    # s=2: rung 9, prune 6, rung 3, prune 2, rung 1; s=1: rung 5, prune 4, rung 1; s=0: rung 3.
    assert sizes == [9, 6, 3, 2, 1, 5, 4, 1, 3]


def test_lr_range_tries_the_fractions_a_batch_at_a_time(context):
    raw = {"strategy": "lr-range", "trials": 20, "lr_start": 0.01, "fractions": [0.75, 0.5, 0.1], "batch": 2}
    sizes = []

    def evaluate(request):
        lr = request.params["lr"]
        return Outcome(f"c{request.number}", "diverged" if lr > 0.3 else "ok", None if lr > 0.3 else lr)

    lrs = [r.params["lr"] for r in drive(context("s", raw), evaluate, batches=sizes)]
    assert sizes == [1] * 6 + [2] and lrs[6:] == pytest.approx([0.24, 0.032])


def test_asha_promotes_the_top_third_without_waiting_for_a_full_rung(context):
    """R = 9, eta = 3: rungs at 1, 3, 9 units (10, 30, 90 steps). One job at a time; the metric of
    trial n is METRIC[n] at every rung. Hand-run of ASHA's get_job:
    start 0, 1, 2; rung 0 has 3 results -> promote its best (1); start 3; rung 0's top 1 of 4 is 3 -> promote 3;
    start 4, 5 (the 6 trials are used); rung 0's top 2 of 6 are 3, 4 -> promote 4; rung 1's top 1 of 3 is 3 ->
    train 3 to the end; nothing left to promote: prune 0, 1, 2, 4, 5."""
    metric = [5.0, 3.0, 4.0, 1.0, 2.0, 6.0]
    raw = {"strategy": "asha", "max_resource": 9, "eta": 3, "resource_steps": 10, "trials": 6, "space": SPACE,
           "seed": 0}
    requests = drive(context("asha", raw), evaluate=lambda r: Outcome(
        f"c{r.number}", "pruned" if isinstance(r, Prune) else ("paused" if r.halt_at_step else "ok"),
        metric[r.number], getattr(r, "halt_at_step", 0) or 90))
    runs = [(r.number, r.halt_at_step) for r in requests if isinstance(r, Run)]
    assert runs == [(0, 10), (1, 10), (2, 10), (1, 30), (3, 10), (3, 30), (4, 10), (5, 10), (4, 30), (3, 0)]
    assert [r.number for r in requests if isinstance(r, Prune)] == [0, 1, 2, 4, 5]
    study = context("asha", raw).trials.study
    states = {t.number: t.state for t in study.get_trials()}
    assert states[3] == optuna.trial.TrialState.COMPLETE
    assert all(states[n] == optuna.trial.TrialState.PRUNED for n in (0, 1, 2, 4, 5))


def test_asha_fills_a_batch_with_promotions_and_new_configurations(context):
    metric = [5.0, 3.0, 4.0, 1.0, 2.0, 6.0, 7.0, 8.0, 9.0]
    raw = {"strategy": "asha", "max_resource": 9, "eta": 3, "resource_steps": 10, "trials": 9, "space": SPACE,
           "seed": 0, "batch": 3}
    sizes = []
    requests = drive(context("asha-batch", raw), batches=sizes, evaluate=lambda r: Outcome(
        f"c{r.number}", "pruned" if isinstance(r, Prune) else ("paused" if r.halt_at_step else "ok"),
        metric[r.number], getattr(r, "halt_at_step", 0) or 90))
    runs = [(r.number, r.halt_at_step) for r in requests if isinstance(r, Run)]
    # batch 1: three new; batch 2: promote 1 (top 1 of 3) and start 3, 4; batch 3: promote 3 (top 1 of 5 at
    # rung 0; rung 1's single result has no top third), start 5 and 6.
    assert runs[:3] == [(0, 10), (1, 10), (2, 10)]
    assert runs[3:6] == [(1, 30), (3, 10), (4, 10)]
    assert runs[6:9] == [(3, 30), (5, 10), (6, 10)]
    assert sizes[0] == 3 and (3, 0) in runs


def _pruned_context(make, name, storage=None):
    raw = {"strategy": "random", "trials": 6, "seed": 2, "space": SPACE, "pruner": "median",
           "pruner_startup_trials": 1, "batch": 2}
    ctx = make(name, raw, storage)
    ctx.total_steps, ctx.eval_every = 40, 10
    return ctx


def _curve(params, step):
    return loss(params) + 1.0 / step


def _reporting(ctx):
    """Stands for the driver: every evaluation up to the halt is reported, then the outcome told."""
    def evaluate(request):
        if isinstance(request, Prune):
            return Outcome(f"c{request.number}", "pruned", request.outcome.metric, request.outcome.step)
        end = request.halt_at_step or 40
        ctx.trials.report(request.number, [(s, _curve(request.params, s)) for s in range(10, end + 1, 10)])
        status = "paused" if request.halt_at_step else "ok"
        return Outcome(f"c{request.number}", status, _curve(request.params, end), end)
    return evaluate


def test_pruned_search_stops_losers_and_replays_exactly_after_a_kill(context, tmp_path):
    reference_ctx = _pruned_context(context, "ref")
    reference = drive(reference_ctx, evaluate=_reporting(reference_ctx))
    kinds = [(type(r).__name__, r.number, getattr(r, "halt_at_step", None)) for r in reference]
    assert any(kind == "Prune" for kind, _, _ in kinds)  # the median rule stopped someone
    assert [r.halt_at_step for r in reference if isinstance(r, Run)][:2] == [10, 10]
    pruned = [t for t in reference_ctx.trials.study.get_trials() if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned and all(max(t.intermediate_values) < 40 for t in pruned)

    killed_ctx = _pruned_context(context, "run", open_storage(tmp_path))
    evaluate = _reporting(killed_ctx)

    def dies_late(request):
        outcome = evaluate(request)
        if isinstance(request, Run) and request.number == 3 and request.halt_at_step == 20:
            # The cell trained past the decision before the kill: step 30 is in the storage already.
            killed_ctx.trials.report(3, [(30, _curve(request.params, 30))])
            raise Stop
        return outcome

    with pytest.raises(Stop):
        drive(killed_ctx, evaluate=dies_late)
    resumed_ctx = _pruned_context(context, "run", open_storage(tmp_path))
    resumed = drive(resumed_ctx, evaluate=_reporting(resumed_ctx))
    assert [(type(r).__name__, r.number, getattr(r, "halt_at_step", None)) for r in resumed] == kinds
