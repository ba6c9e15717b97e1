"""bench estimate: the worst of steps 10-19 x planned steps, in hours and dollars."""

import json
import time

import pytest
import torch

from bench.cells import Cell
from bench.cli import main
from bench.estimate import Measurement, noisy_warning, project, projected, shape_key
from bench.timing import StepWindowTimer
from tests.conftest import TINY_SWEEP_CELL

TINY = TINY_SWEEP_CELL + """max_steps = 30
model = "gpt1"
[matrix]
optimizer = ["sgd", "adam"]
"""


def test_hours_and_dollars_arithmetic():
    hours, cost = projected(0.250, 14_400, 1.50)  # 250 ms x 14,400 steps = 3,600 s
    assert hours == pytest.approx(1.0) and cost == pytest.approx(1.50)
    hours, cost = projected(0.0421, 3_000, 2.0)
    assert hours == pytest.approx(42.1 * 3_000 / 3.6e6) and cost == pytest.approx(hours * 2.0)


def test_only_steps_10_to_19_count_and_the_slowest_wins():
    timer = StepWindowTimer(torch.device("cpu"))
    for step in range(25):
        timer.begin(step)
        time.sleep({3: 0.06, 13: 0.03, 22: 0.06}.get(step, 0.0))  # 3 and 22 lie outside the window
        timer.end(step)
    timed = timer.result()
    assert sorted(timer.times) == list(range(10, 20)) and timed["worst_step_10_19_index"] == 13
    measured = Measurement("name", 5, 100, 10_000, timed["step_times_10_19_s"], timed["worst_step_10_19_index"],
                           7, "process RSS, sampled", 10, 4)
    config = {"batch_size": 4, "grad_accum": 1, "seq_len": 16, "epochs": 1, "steps_per_epoch": 0, "max_steps": 1000,
              "max_flops": 0.0, "max_tokens": 0, "max_time": 0.0, "max_cost": 0.0, "cost_per_hour": 1.5}
    estimate = project(Cell("id", "name", config), measured, cost_per_hour=1.5)
    worst_ms = timed["worst_step_10_19_s"] * 1000
    assert estimate.worst_step_ms == pytest.approx(worst_ms) and worst_ms >= 30
    assert estimate.hours == pytest.approx(worst_ms * 1000 / 3.6e6)
    assert estimate.cost == pytest.approx(estimate.hours * 1.5)
    assert (estimate.planned_tokens, estimate.train_flops) == (64_000, 6_400_000)
    assert (estimate.peak_memory_bytes, estimate.peak_memory_source) == (7, "process RSS, sampled")
    assert estimate.median_step_ms < worst_ms and estimate.spread == pytest.approx(worst_ms / estimate.median_step_ms)
    assert estimate.median_hours == pytest.approx(estimate.median_step_ms * 1000 / 3.6e6)
    assert estimate.measured_by == ""  # timed on itself


def test_a_noisy_window_is_named_with_its_spread():
    times = [0.010] * 9 + [0.030]
    config = {"batch_size": 1, "grad_accum": 1, "seq_len": 1, "epochs": 1, "steps_per_epoch": 0, "max_steps": 10,
              "max_flops": 0.0, "max_tokens": 0, "max_time": 0.0, "max_cost": 0.0, "cost_per_hour": 1.5}
    noisy = project(Cell("i", "gpt", config), Measurement("gpt", 1, 1, 100, times, 19, None, "-", 1, 1), 1.5)
    assert noisy.spread == pytest.approx(3.0)
    assert noisy_warning(noisy).startswith("warning: gpt: steps 10-19 vary 3.00x (worst 30.0 ms, median 10.0 ms)")
    steady = project(Cell("i", "gpt", config), Measurement("gpt", 1, 1, 100, [0.01] * 10, 10, None, "-", 1, 1), 1.5)
    assert noisy_warning(steady) is None


def test_seed_and_lr_do_not_change_the_step_shape_but_the_optimizer_does():
    base = {"model": "gpt1", "optimizer": "adam", "seed": 0, "lr": 1e-3, "max_steps": 10}
    assert shape_key(base) == shape_key({**base, "seed": 3, "lr": 0.1, "max_steps": 99})
    assert shape_key(base) != shape_key({**base, "optimizer": "sgd"})


def test_cells_of_one_shape_are_timed_once(write_matrix, tmp_path, capsys):
    path = write_matrix(TINY.replace('optimizer = ["sgd", "adam"]', 'optimizer = ["sgd"]\nlr = [0.1, 0.01]')
                        + "\n", name="shared")
    text = path.read_text().replace("[defaults]", "seeds = [0, 1]\n[defaults]")
    path.write_text(text)
    assert main(["estimate", str(path), "--outputs", str(tmp_path / "out")]) == 0
    captured = capsys.readouterr()
    assert "4 cells, 1 distinct step shape to time" in captured.err
    assert captured.err.count("timing 20 steps") == 1
    saved = json.loads((tmp_path / "out" / "shared" / "estimate.json").read_text())
    first, *others = saved["cells"]
    assert first["measured_by"] == "" and all(c["measured_by"] == first["name"] for c in others)
    assert len({c["worst_step_ms"] for c in saved["cells"]}) == 1
    assert "running total" in captured.err and "matrix total" in captured.err


def test_estimate_command_writes_only_its_file_and_report_compares(write_matrix, tmp_path, capsys):
    path = write_matrix(TINY, name="est")
    outputs = tmp_path / "out"
    assert main(["estimate", str(path), "--outputs", str(outputs), "--cost-per-hour", "3"]) == 0
    shown = capsys.readouterr().out
    assert "-adam " in shown and "-sgd " in shown
    assert "| total" in shown
    assert [p.name for p in (outputs / "est").iterdir()] == ["estimate.json"]  # no cell folders
    saved = json.loads((outputs / "est" / "estimate.json").read_text())
    assert saved["cost_per_hour"] == 3 and len(saved["cells"]) == 2
    for cell in saved["cells"]:
        assert cell["planned_steps"] == 30 and cell["planned_tokens"] == 30 * 4 * 16
        assert cell["hours"] == pytest.approx(cell["worst_step_ms"] * 30 / 3.6e6)
        assert cell["cost"] == pytest.approx(cell["hours"] * 3) and cell["weights_bytes"] > 0

    assert main(["run", str(path), "--outputs", str(outputs)]) == 0
    capsys.readouterr()
    assert main(["report", "--outputs", str(outputs), "--tables", "estimate"]) == 0
    report = capsys.readouterr().out
    assert "estimate vs actual" in report and "Actual / estimate" in report


def test_too_few_steps_is_one_line(write_matrix, tmp_path, capsys):
    assert main(["estimate", str(write_matrix(TINY)), "--steps", "12", "--outputs", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "--steps must be at least 20" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()
