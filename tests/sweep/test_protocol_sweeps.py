"""Pruned random/TPE searches, intermediate values in the storage, warm starts and AlgoPerf studies,
end to end through the real runner and trainer on tiny cells."""

from pathlib import Path

import optuna
from optuna.trial import TrialState

from bench.cli import main

TINY = """
[defaults]
dataset = "synthetic"
vocab_size = 16
train_tokens = 3000
valid_tokens = 300
test_tokens = 300
seq_len = 16
batch_size = 4
max_steps = 8
eval_every = 2
n_embd = 16
n_head = 2
n_positions = 32
log_every = 4
memory_interval_ms = 0
model = "gpt1"
optimizer = "adam"
"""


def studies(outputs: Path, name: str) -> dict[str, optuna.Study]:
    storage = optuna.storages.RDBStorage(f"sqlite:///{outputs / name / 'sweep.db'}")
    return {n: optuna.load_study(study_name=n, storage=storage) for n in optuna.study.get_all_study_names(storage)}


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
    study, = studies(outputs, "pruned").values()
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
    study, = studies(outputs, "warm").values()
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
    assert len(next(iter(studies(outputs, "warm").values())).get_trials()) == 4


def test_studies_split_the_trials_into_independent_searches(write_matrix, tmp_path):
    path = write_matrix(TINY + """
[sweep]
strategy = "random"
trials = 4
studies = 2
final_seeds = [0, 1]
[sweep.space]
lr = { loguniform = [1e-3, 1e-1] }
""", name="studied")
    outputs = tmp_path / "out"
    assert main(["run", str(path), "--outputs", str(outputs)]) == 0
    found = studies(outputs, "studied")
    assert sorted(found) == ["all study 1", "all study 2"]
    first, second = (found[k] for k in sorted(found))
    assert len(first.trials) == len(second.trials) == 2
    assert first.trials[0].params != second.trials[0].params  # a seed of their own
    assert first.user_attrs["final_cells"] == second.user_attrs["final_cells"]
    assert len(first.user_attrs["final_cells"]) == 2
