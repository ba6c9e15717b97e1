"""The console logger's progress lines: steps/s and time left."""

from __future__ import annotations

import io

from bench_plugins.console import ConsoleLogger, format_duration


def _log(logger, cell, step, elapsed_s):
    logger.bench_log_step(cell=cell, step=step, metrics={"train_loss": 2.4, "lr": 1e-3, "elapsed_s": elapsed_s})


def test_progress_lines_gain_speed_and_time_left_once_the_rate_is_steady():
    stream = io.StringIO()
    logger = ConsoleLogger(stream)
    logger.plain_interval_s = 0.0  # every call prints (not a terminal)
    cell = {"name": "gpt1-L1-adamw"}
    logger.bench_run_start(cell=cell, total_steps=1020)
    for step, elapsed in ((5, 1.0), (10, 2.0), (15, 3.0), (20, 4.0)):
        _log(logger, cell, step, elapsed)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "gpt1-L1-adamw: training 1020 steps"
    assert not any("left" in line for line in lines[1:4])  # the first log and two intervals: no rate yet
    assert lines[4].endswith("step 20/1020 loss 2.4000 lr 1.00e-03 5.0 steps/s, 3m20s left")


def test_a_slow_start_does_not_inflate_the_early_time_left():
    """Steps 1-2 take 5x the 0.1 s of the rest (compilation, allocation). The old estimate (steps since
    the first log over the seconds since it) said 2m30s at step 3 and 1m57s at step 4 for a true 50 s;
    the first estimate shown now is within 5% of the truth."""
    stream = io.StringIO()
    logger = ConsoleLogger(stream)
    logger.plain_interval_s = 0.0
    cell = {"name": "lstm"}
    logger.bench_run_start(cell=cell, total_steps=504)
    elapsed = 0.0
    for step in range(1, 6):
        elapsed += 0.5 if step <= 2 else 0.1
        _log(logger, cell, step, elapsed)
    lines = stream.getvalue().splitlines()[1:]
    assert not any("left" in line for line in lines[:3])
    assert lines[3].endswith("step 4/504 loss 2.4000 lr 1.00e-03 10.0 steps/s, 50s left")  # 500 steps at 10/s


def test_each_cell_starts_its_rate_afresh():
    stream = io.StringIO()
    logger = ConsoleLogger(stream)
    logger.plain_interval_s = 0.0
    cell = {"name": "a"}
    logger.bench_run_start(cell=cell, total_steps=100)
    for step in range(1, 6):
        _log(logger, cell, step, step * 1.0)
    logger.bench_run_start(cell={"name": "b"}, total_steps=100)
    _log(logger, {"name": "b"}, 1, 0.1)
    _log(logger, {"name": "b"}, 2, 0.2)
    assert "left" not in stream.getvalue().splitlines()[-1]


def test_durations_read_at_a_glance():
    assert [format_duration(s) for s in (4.4, 185, 3725)] == ["4s", "3m05s", "1h02m"]
