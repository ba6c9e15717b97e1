"""Budget arithmetic: steps from FLOPs and tokens, and which time or cost budget is used up."""

from __future__ import annotations

from bench.budget import make_plan, planned_steps, zero_step_problem
from bench.schema import TRAINER_KEYS

BASE = {name: key.default for name, key in TRAINER_KEYS.items()} | {"batch_size": 4, "seq_len": 8, "grad_accum": 2}


def test_steps_follow_from_flop_and_token_budgets():
    # 64 tokens per step; 1000 FLOPs per token -> 64,000 FLOPs per step.
    assert planned_steps({**BASE, "max_tokens": 64 * 10 + 63}, 10_000, 1000) == (156, 10)
    assert planned_steps({**BASE, "max_flops": 64_000 * 7.9}, 10_000, 1000) == (156, 7)
    assert planned_steps({**BASE, "max_flops": 64_000 * 7.0, "max_tokens": 64 * 5}, 10_000, 1000)[1] == 5
    assert planned_steps({**BASE, "epochs": 2}, 10_000, 1000) == (156, 312)  # no budget: epochs x steps


def test_a_budget_below_one_step_is_named():
    assert "less than one step's 64 tokens" in zero_step_problem({**BASE, "max_tokens": 63}, 1000)
    assert "less than one step's 6.4e+04 FLOPs" in zero_step_problem({**BASE, "max_flops": 63_999.0}, 1000)
    assert zero_step_problem({**BASE, "max_flops": 64_000.0}, 1000) is None


def test_time_and_cost_budgets_name_what_ran_out():
    plan = make_plan({**BASE, "max_cost": 0.5, "cost_per_hour": 1.5}, 10_000, 1000)
    assert plan.exhausted(1199.0) is None and plan.exhausted(1200.0) == "max_cost"
    plan = make_plan({**BASE, "max_time": 60.0}, 10_000, 1000)
    assert plan.exhausted(59.9) is None and plan.exhausted(60.0) == "max_time"
