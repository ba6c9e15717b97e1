"""The fair comparison, target tests and D_eff speedups as report sections (bench/report/protocols.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from bench.report import protocols
from bench.report.render import render

LOSSES = {"adamw": [3.00, 3.02, 3.01], "lion": [2.90, 2.93, 2.91], "sgd": [3.30, 3.28, 3.35]}


def _summaries(losses=LOSSES, tokens=1000.0, schedule="cosine"):
    out = []
    for optimizer, values in losses.items():
        for seed, loss in enumerate(values):
            out.append({"id": f"{optimizer}{seed}", "name": f"{optimizer}-seed{seed}", "status": "ok",
                        "best_val_loss": loss, "train_tokens": tokens, "steps": 10, "planned_steps": 10,
                        "epochs": 1, "best_epoch": 1,
                        "config": {"optimizer": optimizer, "seed": seed, "schedule": schedule}})
    return out


def _labels(summaries):
    return {s["id"]: (f"optimizer={s['config']['optimizer']}", "lr=0.01") for s in summaries}


def test_fair_comparison_pairs_every_configuration_with_holm_and_effect_size():
    summaries = _summaries()
    frame = protocols.configurations(summaries, _labels(summaries))
    standings, pairs = protocols.fair_sections(frame, 0.05, [])
    assert list(standings.table["Configuration"]) == ["optimizer=lion", "optimizer=adamw", "optimizer=sgd"]
    assert len(pairs.table) == 3 and "3 pairs" in pairs.title and "the 3 pair(s)" in pairs.notes[0]
    row = pairs.table[(pairs.table["A"] == "optimizer=lion") & (pairs.table["B"] == "optimizer=adamw")].iloc[0]
    diff = np.array(LOSSES["lion"]) - np.array(LOSSES["adamw"])
    assert row["p"] == pytest.approx(scipy_stats.ttest_rel(LOSSES["lion"], LOSSES["adamw"]).pvalue)
    assert row["d_z"] == pytest.approx(diff.mean() / diff.std(ddof=1))
    ordered = sorted(pairs.table["p"])
    assert sorted(pairs.table["p (Holm)"]) == pytest.approx(
        np.maximum.accumulate([min(1, p * k) for p, k in zip(ordered, (3, 2, 1))]))
    text = render(pairs.table, "github")
    assert "d_z" in text and "p (Holm)" in text


def test_target_section_states_both_rules():
    summaries = _summaries()
    frame = protocols.configurations(summaries, _labels(summaries))
    section = protocols.target_section(frame, 3.05, alpha=0.01, sigma=0.0013, margin=0.004)
    lion = section.table[section.table["Configuration"] == "optimizer=lion"].iloc[0]
    assert lion["t-test p"] == pytest.approx(scipy_stats.ttest_1samp(LOSSES["lion"], 3.05,
                                                                     alternative="less").pvalue)
    assert lion["Passes t (p < 0.01)"] and lion["Passes z (>= 0.004)"]
    sgd = section.table[section.table["Configuration"] == "optimizer=sgd"].iloc[0]
    assert not sgd["Passes t (p < 0.01)"] and not sgd["Passes z (>= 0.004)"]
    assert any("ttest_1samp" in n for n in section.notes) and any("sigma = 0.0013" in n for n in section.notes)


def test_speedup_from_reference_budgets_and_when_too_few():
    E, B, beta = 2.0, 50.0, 0.5
    summaries = []
    for i, tokens in enumerate((1e3, 2e3, 4e3, 8e3)):
        summaries.append({"id": f"ref{i}", "status": "ok", "best_val_loss": E + B / tokens**beta,
                          "train_tokens": tokens, "config": {"optimizer": "adamw", "seed": 0}})
    # lion reaches at 1e3 tokens what adamw reaches at 4e3: speedup 4.
    summaries.append({"id": "lion", "status": "ok", "best_val_loss": E + B / 4e3**beta, "train_tokens": 1e3,
                      "config": {"optimizer": "lion", "seed": 0}})
    labels = {s["id"]: (s["id"], "") for s in summaries}
    frame = protocols.configurations(summaries, labels)
    section = protocols.speedup_section(frame, "adamw", None)
    lion = section.table[section.table["Configuration"] == "lion"].iloc[0]
    assert lion["Speedup"] == pytest.approx(4.0, rel=1e-3)
    assert any("4 budgets" in n for n in section.notes)
    few = protocols.speedup_section(frame[frame["id"].isin(["ref0", "ref1", "lion"])], "adamw", None)
    assert few.table.empty and "Too few points" in few.notes[0]


def test_decay_warning_names_cells_ranked_mid_schedule():
    summaries = _summaries()
    summaries[0].update(status="ok", steps=5)  # stopped at step 5 of 10
    warnings = protocols.decay_warnings(summaries, [s["id"] for s in summaries])
    assert len(warnings) == 1 and "1 compared cell" in warnings[0] and "step 5 of 10" in warnings[0]
    assert protocols.decay_warnings(_summaries(schedule="constant"), ["adamw0"]) == []
    assert math.isfinite(protocols.TARGET_ALPHA)
