"""The sweep's planned work (bench.sweep.work) and the line the driver says after each round."""

from __future__ import annotations

from bench.cli import main
from bench.eta import PlannedWork
from bench.sweep.spec import parse_sweep
from bench.sweep.work import StudyWork, SweepWork, planned_trials, progress_line, study_steps
from tests.sweep.test_protocol_sweeps import TINY

LR = {"lr": {"loguniform": [1e-4, 1e-1]}}


def test_hyperband_counts_each_promotion_as_the_steps_it_adds():
    spec = parse_sweep({"strategy": "hyperband", "max_resource": 9, "eta": 3, "resource_steps": 2, "space": LR}, "m")
    # brackets 9x1 3x3 1x9 | 5x3 1x9 | 3x9: units 9 + 3*2 + 1*6 + 15 + 1*6 + 27 = 69 (a resumed cell
    # trains only the steps its next rung adds), so 138 steps, not the 156 of every rung from scratch
    assert planned_trials(spec) == 17
    assert study_steps(spec, 17, 18) == 138


def test_asha_plans_at_most_the_top_third_of_each_rung():
    spec = parse_sweep({"strategy": "asha", "max_resource": 9, "eta": 3, "resource_steps": 1, "trials": 9,
                        "space": LR}, "m")
    assert study_steps(spec, planned_trials(spec), 9) == 9 * 1 + 3 * 2 + 1 * 6


def test_sampled_searches_plan_every_trial_at_full_length_or_leave_it_to_the_budget():
    assert study_steps(parse_sweep({"trials": 5, "space": LR}, "m"), 5, 12) == 60
    timed = parse_sweep({"strategy": "tpe", "max_time": 60, "space": LR}, "m")
    assert planned_trials(timed) is None and study_steps(timed, None, 12) is None


def test_the_progress_line_says_the_plan_left_at_the_speed_so_far():
    now = [0.0]
    eta = PlannedWork(400, done=100, clock=lambda: now[0])  # 100 steps from an earlier session
    work = SweepWork([StudyWork("all", 10, 30, 300, False)], final_runs=2, final_steps=100)
    assert progress_line(work, eta, 0, "") == "sweep: 0/10 trials settled, 300 planned steps left, final " \
                                              "seeds included (nothing trained yet)"
    now[0] = 30.0
    eta.trained(60)  # this session: 60 steps in 30 s
    assert progress_line(work, eta, 2, "") == ("sweep: 2/10 trials settled, about 2m00s to go (240 planned steps "
                                               "left, final seeds included, at the 2.0 steps/s so far)")
    pruned = SweepWork([StudyWork("all", 10, 30, 300, True)], final_runs=0, final_steps=0)
    assert "up to about 2m00s to go" in progress_line(pruned, eta, 2, "")
    open_ended = SweepWork([StudyWork("all", None, 30, None, False)], final_runs=0, final_steps=0)
    assert progress_line(open_ended, eta, 2, "tpe runs until its budget ends (max_time 40 s of training left)") \
        == ("sweep: 2 trials settled, time left not fixed: tpe runs until its budget ends "
            "(max_time 40 s of training left) (2.0 steps/s so far)")


def test_a_sweep_says_its_time_left_after_each_round(write_matrix, tmp_path, capsys):
    path = write_matrix(TINY + """
[sweep]
strategy = "random"
trials = 3
final_seeds = 1
[sweep.space]
lr = { loguniform = [1e-3, 1e-1] }
""", name="eta_sweep")
    assert main(["run", str(path), "--outputs", str(tmp_path / "out")]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if "trials settled" in line]
    # 3 trials + 1 final seed of 8 steps: 32 planned; a line after each trial, none once all is trained
    assert [line.split(",")[0] for line in lines] == ["sweep: 1/3 trials settled", "sweep: 2/3 trials settled",
                                                      "sweep: 3/3 trials settled"]
    assert "(24 planned steps left, final seeds included, at the " in lines[0]
    assert "(8 planned steps left, final seeds included, at the " in lines[2]


def test_dry_run_prints_the_planned_total(write_matrix, tmp_path, capsys):
    path = write_matrix(TINY + """
[sweep]
strategy = "hyperband"
max_resource = 9
eta = 3
resource_steps = 2
final_seeds = 2
[sweep.space]
lr = { loguniform = [1e-3, 1e-1] }
""", name="hb_total")
    assert main(["run", str(path), "--dry-run", "--outputs", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "  138 steps, about " in out  # the study
    assert "planned total: 17 trial(s) + 2 final-seed run(s), 174 steps, about " in out  # + 2 x 18


def test_dry_run_of_a_budgeted_search_says_what_bounds_it(write_matrix, tmp_path, capsys):
    path = write_matrix(TINY + '[sweep]\nstrategy = "tpe"\nmax_time = 30\n[sweep.space]\n'
                               'lr = { loguniform = [1e-3, 1e-1] }', name="tpe_total")
    assert main(["run", str(path), "--dry-run", "--outputs", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "planned total: not fixed, tpe runs until its budget ends (max_time 30 s of training per group)" in out
