"""AlgoPerf performance profiles on a hand-computed example."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from bench.analysis import profiles

INF = math.inf
# Three workloads, three algorithms (times to target; inf = never reached).
TIMES = pd.DataFrame({"a": [10.0, 20.0, INF], "b": [20.0, 10.0, 30.0], "c": [50.0, INF, 15.0]},
                     index=["w1", "w2", "w3"])


def test_ratios_against_the_fastest_per_workload():
    r = profiles.ratios(TIMES)
    assert r.loc["w1"].tolist() == [1.0, 2.0, 5.0]
    assert r.loc["w2"].tolist() == [2.0, 1.0, INF]
    assert r.loc["w3"].tolist() == [INF, 2.0, 1.0]


def test_profile_is_fraction_of_workloads_within_tau():
    rho = profiles.profile(profiles.ratios(TIMES), [1.0, 2.0, 4.0, 5.0])
    assert rho["a"].tolist() == pytest.approx([1 / 3, 2 / 3, 2 / 3, 2 / 3])
    assert rho["b"].tolist() == pytest.approx([1 / 3, 1.0, 1.0, 1.0])
    assert rho["c"].tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 3, 2 / 3])


def test_area_score_by_hand():
    # r_max = 4, so a workload at ratio r adds (4 - r) / 3 / 3 workloads.
    # a: ratios 1, 2 -> (3 + 2) / 9;  b: 2, 1, 2 -> (2 + 3 + 2) / 9;  c: 5 (beyond r_max), 1 -> 3 / 9.
    scores = profiles.area_scores(profiles.ratios(TIMES), r_max=4.0)
    assert scores.to_dict() == pytest.approx({"a": 5 / 9, "b": 7 / 9, "c": 3 / 9})
    # The exact area matches a fine numerical integral of the profile.
    taus = np.linspace(1, 4, 300001)
    rho = profiles.profile(profiles.ratios(TIMES), taus)
    numeric = np.trapezoid(rho.to_numpy(), taus, axis=0) / 3
    assert numeric == pytest.approx(scores.to_numpy(), abs=1e-4)


def test_workload_nobody_reached_counts_against_everyone():
    times = pd.DataFrame({"a": [1.0, INF], "b": [2.0, INF]}, index=["w1", "w2"])
    scores = profiles.area_scores(profiles.ratios(times))
    assert scores.to_dict() == pytest.approx({"a": 0.5, "b": (2 / 3) / 2})
