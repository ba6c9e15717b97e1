"""Studies x trials aggregation, edge-of-range and end-of-schedule checks (bench/analysis/protocols.py),
and the D_eff speedup fit (bench/analysis/speedup.py)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from bench.analysis import profiles, protocols, speedup

INF = math.inf


def test_studies_aggregation_is_median_of_per_study_best():
    rows = []
    # adam on w1: study bests 10, 20, 30 -> median 20. sgd on w1: bests 15, inf, inf -> inf (missed twice).
    for study, costs in enumerate(([10, 40], [20, INF], [30, 35])):
        rows += [("w1", "adam", study, c) for c in costs]
    for study, costs in enumerate(([15, INF], [INF, INF], [INF])):
        rows += [("w1", "sgd", study, c) for c in costs]
    # w2: adam 5, 7, 6 -> 6; sgd 4, 4, 100 -> 4
    rows += [("w2", "adam", s, c) for s, c in enumerate((5, 7, 6))]
    rows += [("w2", "sgd", s, c) for s, c in enumerate((4, 4, 100))]
    frame = pd.DataFrame(rows, columns=["workload", "algorithm", "study", "cost"])
    times = protocols.studies_times(frame)
    assert times.loc["w1", "adam"] == 20 and times.loc["w1", "sgd"] == INF
    assert times.loc["w2", "adam"] == 6 and times.loc["w2", "sgd"] == 4
    scores = profiles.area_scores(profiles.ratios(times))
    assert scores["adam"] > scores["sgd"]  # sgd is fastest on w2 but misses w1


def test_edge_values():
    assert protocols.edge_values([1e-4, 1e-3, 1e-2], 1e-2) == "highest"
    assert protocols.edge_values([1e-4, 1e-3, 1e-2], 1e-4) == "lowest"
    assert protocols.edge_values([1e-4, 1e-3, 1e-2], 1e-3) is None
    assert protocols.edge_values([1e-4, 1e-2], 1e-2) is None  # two values: no interior to compare with
    assert protocols.edge_values(["a", "b", "c"], "a") is None


def test_ranked_before_end():
    done = {"config": {"schedule": "cosine"}, "status": "ok", "steps": 100, "planned_steps": 100,
            "epochs": 2, "best_epoch": 2}
    assert protocols.ranked_before_end(done) is None
    assert "pruned" in protocols.ranked_before_end({**done, "status": "pruned", "step": 30})
    assert "stopped at step 60" in protocols.ranked_before_end({**done, "steps": 60, "stopped_by": "max_time"})
    assert "epoch 1 of 2" in protocols.ranked_before_end({**done, "best_epoch": 1})
    flat = {**done, "config": {"schedule": "constant"}, "steps": 60}
    assert protocols.ranked_before_end(flat) is None


def test_data_law_recovers_known_law_and_speedup():
    E, B, beta = 2.0, 300.0, 0.4
    tokens = np.array([1e5, 2e5, 4e5, 8e5, 1.6e6])
    law = speedup.fit_data_law(tokens, E + B / tokens**beta)
    assert law.E == pytest.approx(E, rel=1e-3)
    assert law.beta == pytest.approx(beta, rel=1e-3)
    assert law.B == pytest.approx(B, rel=1e-2)
    # A configuration reaching the reference's loss at 4e5 tokens with 2e5 tokens is twice as data-efficient.
    assert speedup.speedup(law, E + B / 4e5**beta, 2e5) == pytest.approx(2.0, rel=1e-3)
    assert law.effective_tokens(E - 0.1) == INF


def test_data_law_says_when_too_few_points():
    with pytest.raises(speedup.TooFewPoints, match="3 distinct budgets"):
        speedup.fit_data_law([1e5, 2e5, 4e5, 4e5], [3.0, 2.9, 2.8, 2.81])
