"""The console logger's progress lines: steps/s and time left."""

from __future__ import annotations

import io

from bench_plugins.console import ConsoleLogger, format_duration


def test_progress_lines_gain_speed_and_time_left():
    stream = io.StringIO()
    logger = ConsoleLogger(stream)
    logger.plain_interval_s = 0.0  # every call prints (not a terminal)
    cell = {"name": "gpt1-L1-adamw"}
    logger.bench_run_start(cell=cell, total_steps=1010)
    logger.bench_log_step(cell=cell, step=5, metrics={"train_loss": 2.5, "lr": 1e-3, "elapsed_s": 1.0})
    logger.bench_log_step(cell=cell, step=10, metrics={"train_loss": 2.4, "lr": 1e-3, "elapsed_s": 2.0})
    lines = stream.getvalue().splitlines()
    assert lines[0] == "gpt1-L1-adamw: training 1010 steps"
    assert "left" not in lines[1]  # one point gives no rate yet
    assert lines[2].endswith("step 10/1010 loss 2.4000 lr 1.00e-03 5.0 steps/s, 3m20s left")


def test_durations_read_at_a_glance():
    assert [format_duration(s) for s in (4.4, 185, 3725)] == ["4s", "3m05s", "1h02m"]
