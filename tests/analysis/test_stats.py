"""Paired comparisons over constructed seeds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from bench.analysis import stats


def test_t_interval_matches_scipy():
    values = [2.0, 2.2, 2.1, 2.4]
    interval = stats.t_interval(values)
    low, high = scipy_stats.t.interval(0.95, 3, loc=np.mean(values), scale=scipy_stats.sem(values))
    assert (interval.mean, interval.low, interval.high, interval.n) == pytest.approx((2.175, low, high, 4))
    single = stats.t_interval([3.0])
    assert single.n == 1 and np.isnan(single.low)


def test_clear_difference_is_flagged_and_identical_runs_are_not():
    rng = np.random.default_rng(0)
    base = 3.0 + 0.05 * rng.normal(size=5)
    better = stats.paired_comparison(base - 0.2 + 0.01 * rng.normal(size=5), base)
    assert better.verdict == "better" and better.p_value < 0.01 and better.high < 0
    worse = stats.paired_comparison(base, base - 0.2 + 0.01 * rng.normal(size=5))
    assert worse.verdict == "worse"
    same = stats.paired_comparison(base, base.copy())
    assert same.verdict == "not distinguishable at 5 seeds" and same.p_value == 1.0
    noisy = stats.paired_comparison(base, base[::-1])
    assert noisy.verdict.startswith("not distinguishable")


def test_one_seed_allows_no_claim():
    assert stats.paired_comparison([2.0], [3.0]).verdict == "no claim possible with 1 seed"


def test_pairs_differ_in_exactly_one_axis_and_match_seeds():
    rows = []
    for optimizer, shift in (("adam", 0.0), ("sgd", 0.5)):
        for model in ("lstm", "gpt1"):
            for seed in (0, 1, 2):
                rows.append({"optimizer": optimizer, "model": model, "seed": seed,
                             "loss": 2.0 + shift + 0.01 * seed + (0.3 if model == "gpt1" else 0.0)})
    frame = pd.DataFrame(rows)
    pairs = stats.one_axis_pairs(frame, ["model", "optimizer"], "loss")
    assert len(pairs) == 4  # 2 model pairs + 2 optimizer pairs; no diagonal pairs
    opt = pairs[(pairs["axis"] == "optimizer") & (pairs["fixed"] == "model=lstm")].iloc[0]
    assert (opt["a"], opt["b"], opt["seeds"]) == ("adam", "sgd", 3)
    assert opt["mean_difference"] == pytest.approx(-0.5) and opt["verdict"] == "better"
    table = stats.configuration_intervals(frame, ["model", "optimizer"], "loss")
    assert table["seeds"].tolist() == [3, 3, 3, 3]
