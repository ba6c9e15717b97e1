"""Pruned random/TPE searches, intermediate values in the storage, warm starts and AlgoPerf studies,
end to end through the real runner and trainer on tiny cells."""


from optuna.trial import TrialState

from bench.cli import main
from tests.conftest import TINY_SWEEP_CELL, sweep_studies

TINY = TINY_SWEEP_CELL + """max_steps = 8
eval_every = 2
log_every = 4
memory_interval_ms = 0
model = "gpt1"
optimizer = "adam"
"""


def test_pruned_search_reports_every_evaluation_and_stops_losers(write_matrix, tmp_path):
    path = write_matrix(TINY + """
[sweep]
strategy = "random"
trials = 5
seed = 0
pruner = "median"
pruner_startup_trials = 1
[sweep.space]
lr = { loguniform = [1e-4, 1.0] }
""", name="pruned")
    outputs = tmp_path / "out"
    assert main(["run", str(path), "--outputs", str(outputs)]) == 0
    study, = sweep_studies(outputs, "pruned").values()
    trials = study.get_trials()
    assert len(trials) == 5
    for trial in trials:
        # Every evaluation up to where the trial stopped is an intermediate value (what optuna-dashboard plots).
        assert trial.intermediate_values, trial.number
        assert sorted(trial.intermediate_values)[0] == 2
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert complete and pruned
    assert all(sorted(t.intermediate_values) == [2, 4, 6, 8] for t in complete)
    assert all(max(t.intermediate_values) < 8 for t in pruned)


def test_warm_start_adds_finished_cells_and_does_not_train_them_again(write_matrix, tmp_path):
    outputs = tmp_path / "out"
    base = write_matrix(TINY + """
[matrix]
lr = [0.001, 0.01]
""", name="base")
    assert main(["run", str(base), "--outputs", str(outputs)]) == 0
    sweep = write_matrix(TINY + """
[sweep]
strategy = "tpe"
startup_trials = 1
trials = 2
warm_start = ["base"]
[sweep.space]
lr = { loguniform = [1e-4, 1.0] }
""", name="warm")
    assert main(["run", str(sweep), "--outputs", str(outputs)]) == 0
    study, = sweep_studies(outputs, "warm").values()
    trials = study.get_trials()
    warm = [t for t in trials if t.user_attrs.get("warm_start")]
    assert sorted(t.params["lr"] for t in warm) == [0.001, 0.01]
    assert all(t.state == TrialState.COMPLETE and t.user_attrs["matrix"] == "base" for t in warm)
    own = [t for t in trials if not t.user_attrs.get("warm_start")]
    assert len(own) == 2  # the trials budget is the sweep's own; warm results are free
    trained = {p.name for p in (outputs / "warm").iterdir() if (p / "summary.json").is_file()}
    assert not trained & {t.user_attrs["cell_id"] for t in warm}
    # Resumed: nothing is added twice, nothing new is proposed.
    assert main(["run", str(sweep), "--outputs", str(outputs)]) == 0
    assert len(next(iter(sweep_studies(outputs, "warm").values())).get_trials()) == 4


def test_studies_split_the_trials_into_independent_searches(write_matrix, tmp_path):
    path = write_matrix(TINY + """
[sweep]
strategy = "random"
trials = 4
studies = 2
final_seeds = [1, 2]
[sweep.space]
lr = { loguniform = [1e-3, 1e-1] }
""", name="studied")
    outputs = tmp_path / "out"
    assert main(["run", str(path), "--outputs", str(outputs)]) == 0
    found = sweep_studies(outputs, "studied")
    assert sorted(found) == ["all study 1", "all study 2"]
    first, second = (found[k] for k in sorted(found))
    assert len(first.trials) == len(second.trials) == 2
    assert first.trials[0].params != second.trials[0].params  # a seed of their own
    assert first.user_attrs["final_cells"] == second.user_attrs["final_cells"]
    assert len(first.user_attrs["final_cells"]) == 2


def test_dry_run_lists_each_trial_with_planned_steps_and_time(write_matrix, tmp_path, capsys):
    path = write_matrix(TINY.replace("max_steps = 8", "max_steps = 24") + """
[sweep]
strategy = "random"
trials = 3
seed = 5
studies = 1
[sweep.space]
lr = { loguniform = [1e-4, 1.0] }
""", name="planned")
    outputs = tmp_path / "out"
    assert main(["run", str(path), "--dry-run", "--outputs", str(outputs)]) == 0
    out = capsys.readouterr().out
    assert "all: 3 trial(s)" in out and "ms/step" in out
    rows = [line.split() for line in out.splitlines() if line[:1].isdigit()]
    assert [r[0] for r in rows] == ["0", "1", "2"]
    assert all(r[2] == "24" and float(r[3]) > 0 for r in rows)
    assert not (outputs / "planned").exists()  # nothing written


def test_dry_run_of_asha_shows_its_rungs(write_matrix, tmp_path, capsys):
    path = write_matrix(TINY.replace("max_steps = 8\n", "") + """
[sweep]
strategy = "asha"
max_resource = 9
eta = 3
resource_steps = 2
trials = 4
[sweep.space]
lr = { loguniform = [1e-4, 1.0] }
""", name="asha_plan")
    assert main(["run", str(path), "--dry-run", "--outputs", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "rungs (configurations x units of 2 steps)" in out
    assert "2 -> 6 -> 18 if promoted" in out


def test_asha_trains_through_the_runner_and_resumes_promoted_cells(write_matrix, tmp_path):
    path = write_matrix(TINY.replace("max_steps = 8\n", "") + """
[sweep]
strategy = "asha"
max_resource = 9
eta = 3
resource_steps = 1
trials = 9
[sweep.space]
lr = { loguniform = [1e-3, 1e-1] }
""", name="asha_run")
    outputs = tmp_path / "out"
    assert main(["run", str(path), "--outputs", str(outputs)]) == 0
    study, = sweep_studies(outputs, "asha_run").values()
    states = [t.state for t in study.get_trials()]
    # 9 at rung 0 -> its top 3 to rung 1 -> their top 1 to the end; the other 8 are pruned.
    assert len(states) == 9 and TrialState.RUNNING not in states
    assert states.count(TrialState.PRUNED) == 8
    best = [t for t in study.get_trials() if t.state == TrialState.COMPLETE]
    assert best and all(9 in t.intermediate_values for t in best)
