from __future__ import annotations

import pytest

from bench.errors import BenchError
from bench.report.select import filter_summaries, parse_where


def names(summaries):
    return sorted(s["name"] for s in summaries)


def test_equality_on_config_keys_and_layers_alias(summaries):
    assert names(filter_summaries(summaries, ["model=lstm"])) == ["lstm-L1-adamw", "lstm-L1-sgd", "lstm-L2-adamw"]
    assert names(filter_summaries(summaries, ["model=lstm,layers=1"])) == ["lstm-L1-adamw", "lstm-L1-sgd"]
    # Repeated --where flags combine like commas.
    assert names(filter_summaries(summaries, ["model=lstm", "n_layer=2"])) == ["lstm-L2-adamw"]


def test_numbers_compare_as_numbers(summaries):
    assert len(filter_summaries(summaries, ["lr=3e-3"])) == 5  # 0.003 in the config; the failed cell has no lr
    assert names(filter_summaries(summaries, ["best_val_ppl<4", "optimizer!=adamw"])) == []
    assert names(filter_summaries(summaries, ["train_time_s>=3"])) == ["gpt1-L2-adamw"]


def test_not_equal_keeps_cells_missing_the_field(summaries):
    kept = filter_summaries(summaries, ["status!=ok"])
    assert names(kept) == ["gpt1-L1-sgd"]
    assert "gpt1-L1-sgd" in names(filter_summaries(summaries, ["best_val_ppl!=3.1"]))


@pytest.mark.parametrize("expression, message", [
    ("model", "key=value"),
    ("=lstm", "key=value"),
    ("model=", "key=value"),
])
def test_malformed_conditions_name_the_fix(expression, message):
    with pytest.raises(BenchError, match=message):
        parse_where([expression])


def test_unknown_key_suggests_a_close_one(summaries):
    with pytest.raises(BenchError, match="did you mean optimizer"):
        filter_summaries(summaries, ["optimiser=adamw"])


def test_ordering_on_text_is_a_user_error(summaries):
    with pytest.raises(BenchError, match="needs numbers"):
        filter_summaries(summaries, ["model>lstm"])
