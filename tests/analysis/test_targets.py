"""Time-to-target on a known curve."""

from __future__ import annotations

import math

import numpy as np

from bench.analysis import targets


def test_first_evaluation_at_or_below_target_on_a_known_curve():
    # loss(step) = 1 + 4 exp(-step / 100), evaluated every 50 steps, 0.2 s per step.
    steps = np.arange(50, 1001, 50)
    losses = 1 + 4 * np.exp(-steps / 100)
    times = steps * 0.2
    target = 1.5  # crossed analytically at step 100 ln 8 = 207.9, so the first evaluation past it is 250
    reached = targets.first_reaching(steps[::-1], losses[::-1], times[::-1], target)  # order does not matter
    assert reached.step == 250 and math.isclose(reached.time_s, 50.0)
    assert reached.val_loss <= target < 1 + 4 * math.exp(-200 / 100)
    cost = targets.cost_at(reached, tokens_per_step=512, flops_per_token=1e6)
    assert cost == {"step": 250.0, "tokens": 250 * 512.0, "flops": 250 * 512 * 1e6, "time_s": 50.0}


def test_not_reached_is_infinite():
    assert targets.first_reaching([10, 20], [3.0, 2.5], [1.0, 2.0], 2.0) is None
    assert all(math.isinf(v) for v in targets.cost_at(None, 1, 1).values())
    assert targets.first_reaching([10], [float("nan")], [1.0], 5.0) is None
