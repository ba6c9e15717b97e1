from __future__ import annotations

import pandas as pd
import pytest

from bench.errors import BenchError
from bench.report.frame import EXPECTED, sort_frame, summaries_frame

MIB = 2**20


def test_frame_has_every_expected_column_even_for_old_and_failed_cells(summaries):
    frame = summaries_frame(summaries[4:])  # the old-format and the failed cell only
    for column in EXPECTED:
        assert column in frame
    assert list(frame["status"]) == ["ok", "diverged"]


def test_frame_derives_per_epoch_time_and_flops_rate_for_old_summaries(summaries):
    frame = summaries_frame(summaries).set_index("name")
    old = frame.loc["lstm-L2-adamw"]
    assert old["time_per_epoch_s"] == pytest.approx(1.2 / 3)
    assert old["time_per_step_s"] == pytest.approx(1.2 / 300)
    assert old["achieved_flops_per_s"] == pytest.approx(old["train_flops"] / 1.2)
    assert pd.isna(frame.loc["gpt1-L1-sgd", "time_per_epoch_s"])


def test_memory_columns_prefer_nvml_then_sampled_rss_then_os_peak(summaries):
    frame = summaries_frame(summaries).set_index("name")
    assert frame.loc["gpt1-L4-adamw", "memory_peak_bytes"] == 1000 * MIB
    assert frame.loc["gpt1-L4-adamw", "memory_process_mean_bytes"] == 900 * MIB
    assert frame.loc["lstm-L1-sgd", "memory_peak_bytes"] == 400 * MIB
    assert frame.loc["lstm-L1-sgd", "memory_process_mean_bytes"] == 395 * MIB
    assert frame.loc["lstm-L2-adamw", "memory_peak_bytes"] == 415 * MIB
    assert pd.isna(frame.loc["lstm-L2-adamw", "memory_process_peak_bytes"])


@pytest.mark.parametrize("key, first, last", [
    ("ppl", "lstm-L1-adamw", "gpt1-L1-sgd"),
    ("time", "gpt1-L4-adamw", "gpt1-L1-sgd"),
    ("memory", "lstm-L1-sgd", "gpt1-L1-sgd"),
    ("params", "lstm-L1-sgd", "gpt1-L1-sgd"),
    ("name", "gpt1-L1-sgd", "lstm-L2-adamw"),
])
def test_sort_keys_put_missing_values_last(summaries, key, first, last):
    names = list(sort_frame(summaries_frame(summaries), key)["name"])
    assert names[0] == first and names[-1] == last


def test_unknown_sort_key_is_a_user_error(summaries):
    with pytest.raises(BenchError, match="ppl, time, memory"):
        sort_frame(summaries_frame(summaries), "speed")
