import math

import pytest

from bench.testing import parametrize_with_checks
from bench_plugins.schedules import bench_schedules, constant, cosine, linear, wsd


@parametrize_with_checks(schedules=[*bench_schedules(),
                                    *[(f"{c.name}-warmup", c, {"warmup_steps": 5}) for c in bench_schedules()]])
def test_contract(check):
    check()


def test_cosine_matches_its_formula_at_the_landmarks():
    lr, a, b, floor = 1e-3, 100, 1000, 0.1
    schedule = cosine(lr=lr, total_steps=1200, warmup_steps=a, min_lr_fraction=floor, decay_steps=b)
    lr_min = lr * floor
    assert schedule(0) == 0.0
    assert schedule(a // 2) == pytest.approx(lr / 2)
    assert schedule(a) == pytest.approx(lr)
    assert schedule((a + b) // 2) == pytest.approx(lr_min + (lr - lr_min) / 2)
    assert schedule(b) == pytest.approx(lr_min)
    assert schedule(b + 150) == pytest.approx(lr_min)
    t = 700
    expected = lr_min + (lr - lr_min) * 0.5 * (1 + math.cos(math.pi * (t - a) / (b - a)))
    assert schedule(t) == pytest.approx(expected)


def test_cosine_decays_until_the_last_step_by_default():
    schedule = cosine(lr=1.0, total_steps=10, min_lr_fraction=0.0)
    values = [schedule(t) for t in range(11)]
    assert values == sorted(values, reverse=True)
    assert values[10] == 0.0


def test_constant_warmup_starts_at_zero():
    schedule = constant(lr=2.0, total_steps=10, warmup_steps=4)
    assert [schedule(t) for t in (0, 2, 4, 9)] == [0.0, 1.0, 2.0, 2.0]


def test_linear_and_wsd_end_at_the_floor():
    assert linear(lr=1.0, total_steps=10, min_lr_fraction=0.2)(10) == pytest.approx(0.2)
    schedule = wsd(lr=1.0, total_steps=100, warmup_steps=10, decay_fraction=0.2, min_lr_fraction=0.0)
    assert schedule(50) == 1.0 and schedule(80) == 1.0
    assert schedule(90) == pytest.approx(0.5)
    assert schedule(100) == pytest.approx(0.0)


@pytest.mark.parametrize("kwargs", [{"lr": 0.0}, {"warmup_steps": 20}, {"min_lr_fraction": 1.5}])
def test_impossible_schedules_are_rejected(kwargs):
    with pytest.raises(ValueError):
        cosine(**{"lr": 1.0, "total_steps": 10, **kwargs})
