"""The matrix ETA: planned steps left at the rate settled so far, said after each settled cell."""

from __future__ import annotations

from types import SimpleNamespace

from bench.cli import main
from bench.eta import MatrixEta, format_duration, planned_steps
from tests.conftest import TINY_DEFAULTS


def _cell(cell_id: str, **config):
    return SimpleNamespace(id=cell_id, config={"epochs": 1, "steps_per_epoch": 0, "max_steps": 0, **config})


def test_planned_steps_come_from_the_config_or_are_unknown():
    assert planned_steps({"max_steps": 300, "epochs": 9, "steps_per_epoch": 5}) == 300
    assert planned_steps({"max_steps": 0, "epochs": 3, "steps_per_epoch": 100}) == 300
    assert planned_steps({"max_steps": 0, "epochs": 3, "steps_per_epoch": 0}) is None  # one pass over the data
    assert planned_steps({"max_steps": 50, "max_flops": 1e12}) is None  # a budget fixes the steps


def test_time_left_is_the_steps_left_at_the_rate_so_far():
    now = [0.0]
    eta = MatrixEta([_cell("a", max_steps=100), _cell("b", max_steps=300), _cell("c")], clock=lambda: now[0])
    now[0] = 50.0  # 100 steps in 50 s: 2 steps/s
    line = eta.settled("a", 100)
    # b plans 300 steps; c's are unknown and count as the mean planned (200): 500 steps at 2/s
    assert line == "matrix: 1/3 cells settled, 2 left, about 4m10s to go (500 planned steps at the 2.0 steps/s so far)"
    now[0] = 200.0
    assert eta.settled("b", 300).startswith("matrix: 2/3 cells settled, 1 left, about 1m40s to go")
    assert eta.settled("c", 150) is None  # nothing left
    assert eta.settled("c", 150) is None  # a cell counted once


def test_format_duration():
    assert [format_duration(s) for s in (4.4, 185, 3725)] == ["4s", "3m05s", "1h02m"]


def test_a_run_says_the_matrix_eta_after_each_cell_but_the_last(write_matrix, tmp_path, capsys):
    path = write_matrix(f"""
        name = "eta"
        seeds = [0, 1]
        {TINY_DEFAULTS}
        [matrix]
        model = ["lstm"]
        optimizer = ["adamw"]
    """)
    assert main(["run", str(path), "--outputs", str(tmp_path / "out")]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("matrix:")]
    assert len(lines) == 1 and lines[0].startswith("matrix: 1/2 cells settled, 1 left, about ")
    assert "(20 planned steps at the " in lines[0]


def test_step_rate_skips_the_warm_up_and_waits_for_enough_intervals():
    from bench.eta import StepRate

    rate = StepRate(window=9, min_intervals=3)
    # step 1 holds compilation (5x a later step), step 2 still 3x: the old rate since the first log
    # said 3.3 steps/s at step 3 and 4.3 at step 4 for a true 10.
    seen = [rate.log(step, elapsed) for step, elapsed in ((1, 0.5), (2, 0.8), (3, 0.9), (4, 1.0))]
    assert seen[:3] == [None, None, None]
    assert abs(seen[3] - 10.0) < 0.5
    for step in range(5, 20):  # a steady 10 steps/s, then one slow interval (a checkpoint write)
        rate.log(step, 1.0 + (step - 4) * 0.1)
    assert abs(rate.log(20, 3.0) - 10.0) < 0.5


def test_planned_work_counts_steps_done_before_the_session_but_times_only_its_own():
    from bench.eta import PlannedWork

    now = [100.0]
    work = PlannedWork(1000, done=400, clock=lambda: now[0])
    assert work.rate() is None and work.seconds_left() is None and work.steps_left() == 600
    now[0] = 150.0
    work.trained(100)  # 100 steps in 50 s: 2 steps/s
    assert work.steps_left() == 500 and work.seconds_left() == 250
    assert PlannedWork(None).steps_left() is None
