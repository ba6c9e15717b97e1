"""Holm, effect size, the speedrun's t test and z rule (bench/analysis/stats.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from bench.analysis import stats


def test_holm_matches_hand_computed_values():
    # m = 4: sorted p (0.01, 0.02, 0.03, 0.04) x (4, 3, 2, 1) = (0.04, 0.06, 0.06, 0.04) -> running max
    p = [0.04, 0.01, 0.03, 0.02]
    assert stats.holm(p) == pytest.approx([0.06, 0.04, 0.06, 0.06])
    # statsmodels' multipletests(method="holm") on this classic set gives these values.
    p = [0.01, 0.04, 0.03, 0.005]
    assert stats.holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_holm_caps_at_one_and_skips_nan():
    adjusted = stats.holm([0.5, float("nan"), 0.6])
    assert adjusted[0] == pytest.approx(1.0) and adjusted[2] == pytest.approx(1.0)
    assert math.isnan(adjusted[1])
    assert stats.holm([0.01])[0] == pytest.approx(0.01)


def test_paired_comparison_reports_cohen_dz():
    a, b = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.5, 2.3, 3.8, 4.2])
    diff = a - b
    result = stats.paired_comparison(a, b)
    assert result.effect == pytest.approx(diff.mean() / diff.std(ddof=1))
    assert result.effect < 0  # a lower = better


def test_target_t_test_is_scipy_one_sided():
    losses = [3.270, 3.275, 3.272, 3.269, 3.274]
    result = stats.target_t_test(losses, 3.28, alpha=0.01)
    expected = scipy_stats.ttest_1samp(losses, 3.28, alternative="less").pvalue
    assert result.p_value == pytest.approx(expected)
    assert result.passed and result.n == 5
    above = stats.target_t_test([3.29, 3.30, 3.28], 3.28)
    assert not above.passed and above.p_value > 0.5
    assert math.isnan(stats.target_t_test([3.0], 3.28).p_value)


def test_z_rule_by_hand():
    # mean 3.2775, n = 4: (3.28 - 3.2775) * 2 = 0.005 >= 0.004 passes; z = 0.005 / 0.0013
    result = stats.z_rule([3.277, 3.278, 3.277, 3.278], 3.28, sigma=0.0013, margin=0.004)
    assert result.statistic == pytest.approx(0.005)
    assert result.z == pytest.approx(0.005 / 0.0013)
    assert result.p_value == pytest.approx(scipy_stats.norm.sf(0.005 / 0.0013))
    assert result.passed
    assert not stats.z_rule([3.279, 3.279], 3.28, sigma=0.0013, margin=0.004).passed  # 0.0014 < 0.004
