"""Leave-one-budget-out extrapolation errors."""

from __future__ import annotations

import pytest

from bench.analysis import holdout, simulate
from bench.errors import BenchError


def test_noise_free_law_predicts_held_out_budgets():
    rows = holdout.leave_one_budget_out(simulate.isoflop_runs(noise=0.0))
    assert [r.largest for r in rows] == [False] * 8 + [True]
    last = rows[-1]
    assert abs(last.n_error("approach3")) < 0.02
    assert abs(last.n_error("vertex")) < 0.02  # the vertex law's bias is the same at every budget
    assert last.loss_error < 1e-3
    assert set(last.predicted) == {"vertex", "min", "approach3"}


def test_noise_shows_up_as_error():
    quiet = holdout.leave_one_budget_out(simulate.isoflop_runs(noise=0.0), parametric=False)
    noisy = holdout.leave_one_budget_out(simulate.isoflop_runs(noise=0.01, seed=2), parametric=False)
    assert sum(abs(r.n_error("vertex")) for r in noisy) > sum(abs(r.n_error("vertex")) for r in quiet)
    assert "approach3" not in noisy[0].predicted


def test_needs_four_budgets():
    runs = simulate.isoflop_runs(budgets=(1e19, 1e20, 1e21))
    with pytest.raises(BenchError, match="at least four budgets"):
        holdout.leave_one_budget_out(runs)
