import pytest

from bench.errors import ConfigError
from bench.sweep.spec import parse_sweep

LR = {"lr": {"loguniform": [1e-4, 1e-1]}}


def test_defaults_and_options():
    spec = parse_sweep({"strategy": "tpe", "trials": 6, "space": LR, "per": ["optimizer"], "final_seeds": 3}, "m")
    assert (spec.strategy, spec.trials, spec.metric, spec.direction) == ("tpe", 6, "best_val_loss", "minimize")
    assert spec.final_seeds == [1, 2, 3]  # fresh: the trials train on seed 0
    assert spec.budgets == {"trials": 6}
    assert spec.options["startup_trials"] == 4


def test_final_seeds_are_fresh_unless_reuse_is_asked():
    # The winner's curse: a final mean that includes the selected trial's own seed is biased low.
    assert parse_sweep({"trials": 2, "space": LR, "final_seeds": 2}, "m", trial_seed=1).final_seeds == [0, 2]
    with pytest.raises(ConfigError) as info:
        parse_sweep({"trials": 2, "space": LR, "final_seeds": [0, 1, 2]}, "m.toml", trial_seed=0)
    assert str(info.value) == (
        "m.toml: sweep.final_seeds = [0, 1, 2] includes seed 0, which the trials trained with, so the winner's mean "
        "would be biased low (it was selected on that seed); use fresh seeds, e.g. final_seeds = [1, 2, 3] (or a "
        "count, final_seeds = 3), or set sweep.reuse_trial_seeds = true to reuse it knowingly")
    reused = {"trials": 2, "space": LR, "reuse_trial_seeds": True}
    assert parse_sweep({**reused, "final_seeds": [0, 1, 2]}, "m", trial_seed=0).final_seeds == [0, 1, 2]
    assert parse_sweep({**reused, "final_seeds": 2}, "m", trial_seed=0).final_seeds == [0, 1]


def test_hyperband_brackets_and_successive_halving():
    spec = parse_sweep({"strategy": "hyperband", "max_resource": 9, "eta": 3, "space": LR}, "m")
    assert [b.s for b in spec.brackets()] == [2, 1, 0]
    halving = parse_sweep({"strategy": "successive-halving", "max_resource": 9, "space": LR}, "m")
    assert [(b.s, b.configs) for b in halving.brackets()] == [(2, 9)]


@pytest.mark.parametrize("raw, message", [
    ({"strategy": "bayes", "trials": 2, "space": LR}, "sweep.strategy = 'bayes' is impossible"),
    ({"strategy": "random", "space": LR}, "needs a budget"),
    ({"strategy": "hyperband", "space": LR}, "needs sweep.max_resource"),
    ({"strategy": "random", "trials": 2, "space": LR, "budgett": 3}, "unknown key sweep.budgett"),
    ({"strategy": "random", "trials": -1, "space": LR}, "sweep.trials = -1"),
    ({"strategy": "lr-range", "trials": 3, "space": LR}, "lr-range searches lr by itself"),
    ({"strategy": "successive-halving", "max_resource": 9, "bracket": 5, "space": LR}, "bracket s must be in 0..2"),
    ({"strategy": "random", "trials": 2}, "non-empty table"),
])
def test_bad_sweep_tables(raw, message):
    with pytest.raises(ConfigError, match=message):
        parse_sweep(raw, "m.toml")
