"""Sweeps end to end through the real runner and trainer, on tiny cells."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from bench.cli import main
from bench.sweep.spec import parse_sweep
from bench.sweep.strategies import GroupContext, distributions, strategy_for
from bench.sweep.trials import GroupTrials, Outcome
from tests.conftest import TINY_SWEEP_CELL, sweep_studies

TINY = TINY_SWEEP_CELL + """max_steps = 8
n_hidden = 16
log_every = 4
memory_interval_ms = 0
model = "gpt1"
optimizer = "adam"
"""


def test_fair_protocol_gives_every_group_the_same_trials(write_matrix, tmp_path, capsys):
    path = write_matrix(TINY + """
[matrix]
optimizer = ["sgd", "adam"]
[sweep]
strategy = "random"
trials = 2
per = ["optimizer"]
final_seeds = 2
[sweep.space]
lr = { loguniform = [1e-3, 1e-1] }
""", name="fair")
    outputs = tmp_path / "out"
    assert main(["run", str(path), "--outputs", str(outputs)]) == 0
    groups = sweep_studies(outputs, "fair")
    assert sorted(groups) == ["optimizer=adam", "optimizer=sgd"]
    assert [len(s.trials) for s in groups.values()] == [2, 2]
    assert all(t.state.name == "COMPLETE" for s in groups.values() for t in s.trials)
    trial_cells = {t.user_attrs["cell_id"] for s in groups.values() for t in s.trials}
    for study in groups.values():  # the best of each group, rerun over two fresh seeds
        assert len(study.user_attrs["final_cells"]) == 2
        for cell in study.user_attrs["final_cells"]:
            summary = json.loads((outputs / "fair" / cell / "summary.json").read_text())
            assert summary["status"] == "ok" and summary["config"]["seed"] in (1, 2)
            assert cell not in trial_cells  # the selected trial is not one of its own final reruns
    shown = capsys.readouterr().out
    assert "best configuration per group" in shown and "optimizer=adam" in shown

    plots = tmp_path / "plots"
    assert main(["report", "--outputs", str(outputs), "--matrix", "fair", "--tables", "sweep",
                 "--plots", str(plots)]) == 0
    assert (plots / "fair" / "sweep_lr.png").stat().st_size > 1000
    shown = capsys.readouterr().out
    assert "best_val_loss vs lr" in shown and "1, 2; fresh: the trials trained on seed 0" in shown

    best = tmp_path / "best.toml"
    assert main(["report", "--outputs", str(outputs), "--matrix", "fair", "--best-config", str(best)]) == 0
    text = best.read_text()
    assert "[sweep]" not in text and "include = [" in text
    capsys.readouterr()
    # The written file is a plain matrix whose cells are the sweep's best cells (same ids).
    assert main(["run", str(best), "--dry-run"]) == 0
    listed = capsys.readouterr().out
    for study in groups.values():
        assert study.user_attrs["final_cells"][0] in listed


def reference_proposals(raw: dict, count: int) -> list[dict]:
    """What a random sweep proposes, independent of outcomes: drive the strategy in memory."""
    spec = parse_sweep(raw, "m")
    trials = GroupTrials(optuna.storages.InMemoryStorage(), "all", spec.direction, distributions(spec))
    strategy, found = strategy_for(GroupContext(spec, trials, lambda: False)), []
    batch = next(strategy)
    while True:
        found += [request.params for request in batch]
        try:
            batch = strategy.send([Outcome("x", "ok", 1.0) for _ in batch])
        except StopIteration:
            return found


@pytest.mark.slow
def test_sigkill_then_rerun_finishes_without_retraining(write_matrix, tmp_path):
    sweep = {"strategy": "random", "trials": 3, "seed": 5, "space": {"lr": {"loguniform": [1e-3, 1e-1]}}}
    path = write_matrix(TINY.replace("max_steps = 8", "max_steps = 24\ncheckpoint_every = 4") + """
[sweep]
strategy = "random"
trials = 3
seed = 5
[sweep.space]
lr = { loguniform = [1e-3, 1e-1] }
""", name="killed")
    outputs = tmp_path / "outputs"
    env = {**os.environ, "BENCH_OUTPUTS": str(outputs)}
    proc = subprocess.Popen([sys.executable, "-m", "bench.cli", "run", str(path)], env=env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    finished = {}
    deadline = time.time() + 240
    while not finished and time.time() < deadline and proc.poll() is None:  # kill once a trial is complete
        for summary in (outputs / "killed").glob("*/summary.json"):
            if json.loads(summary.read_text()).get("status") == "ok":
                finished[summary] = (summary.read_bytes(), summary.stat().st_mtime_ns)
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert finished, "the first trial did not finish in time"

    assert main(["run", str(path), "--outputs", str(outputs)]) == 0  # the rerun, in this process
    for summary, (content, mtime) in finished.items():
        assert summary.read_bytes() == content and summary.stat().st_mtime_ns == mtime
    study = sweep_studies(outputs, "killed")["all"]
    assert [t.params for t in study.trials] == reference_proposals(sweep, 3)
    assert all(t.state.name == "COMPLETE" for t in study.trials)


def summaries(outputs: Path, name: str) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in (outputs / name).glob("*/summary.json")}


def test_hyperband_prunes_and_promoted_trials_resume_from_their_checkpoint(write_matrix, tmp_path, capsys):
    # R = 3 units of 2 steps, eta = 3: bracket s=1 runs 3 configurations to 2 steps and the best to 6;
    # bracket s=0 runs 2 configurations to 6 steps.
    path = write_matrix(TINY.replace("max_steps = 8\n", "") + """
[sweep]
strategy = "hyperband"
max_resource = 3
eta = 3
resource_steps = 2
[sweep.space]
lr = { loguniform = [1e-3, 1e-1] }
""", name="hb")
    outputs = tmp_path / "out"
    assert main(["run", str(path), "--outputs", str(outputs)]) == 0
    study = sweep_studies(outputs, "hb")["all"]
    first = [t for t in study.trials if t.user_attrs["bracket"] == 1]
    assert len(first) == 3 and len(study.trials) == 5
    cells = summaries(outputs, "hb")
    by_trial = {t.number: cells[t.user_attrs["cell_id"]] for t in study.trials}
    statuses = sorted(by_trial[t.number]["status"] for t in first)
    assert statuses == ["ok", "pruned", "pruned"]
    winner = next(by_trial[t.number] for t in first if by_trial[t.number]["status"] == "ok")
    losers = [by_trial[t.number] for t in first if by_trial[t.number]["status"] == "pruned"]
    assert winner["resumed_at_steps"] == [2] and winner["steps"] == 6  # continued, not restarted
    winner_rows = (outputs / "hb" / winner["id"] / "metrics.jsonl").read_text().splitlines()
    winner_at_2 = min(json.loads(line)["val_loss"] for line in winner_rows if '"kind": "step"' in line)
    assert all(s["step"] == 2 and s["val_loss"] >= winner_at_2 for s in losers)
    assert all(s["budget_used"]["steps"] == 2 and s["budget_used"]["flops"] > 0 for s in losers)
    assert not any((outputs / "hb" / s["id"] / "checkpoints").exists() and
                   any((outputs / "hb" / s["id"] / "checkpoints").iterdir()) for s in losers)
    assert "sweep trials (hyperband" in capsys.readouterr().out

    # The same command again replays the plan from storage and the cells' own rung rows: the
    # promoted trial (now finished) ranks as it did at its rung, so nothing trains or changes.
    stamps = {p: p.stat().st_mtime_ns for p in (outputs / "hb").glob("*/summary.json")}
    assert main(["run", str(path), "--outputs", str(outputs)]) == 0
    assert {p: p.stat().st_mtime_ns for p in (outputs / "hb").glob("*/summary.json")} == stamps
    assert len(sweep_studies(outputs, "hb")["all"].trials) == 5


def test_lr_range_doubles_until_a_real_cell_diverges(write_matrix, tmp_path):
    path = write_matrix(TINY.replace('optimizer = "adam"', 'optimizer = "sgd"') + """
[sweep]
strategy = "lr-range"
trials = 8
lr_start = 1.0
lr_factor = 4.0
fractions = [0.5]
""", name="lrr")
    outputs = tmp_path / "out"
    assert main(["run", str(path), "--outputs", str(outputs)]) == 0
    study = sweep_studies(outputs, "lrr")["all"]
    cells = summaries(outputs, "lrr")
    tried = [(t.params["lr"], cells[t.user_attrs["cell_id"]]["status"]) for t in study.trials]
    first = next(i for i, (_, status) in enumerate(tried) if status == "diverged")
    divergent = tried[first][0]
    # x4 from 1.0 while cells train fine, up to the first LR whose real cell diverges...
    assert [lr for lr, _ in tried[:first + 1]] == [4.0**k for k in range(first + 1)]
    assert all(status == "ok" for _, status in tried[:first]) and first >= 1
    # ...then the fraction of the divergent LR: the boundary lies between the last ok LR and it.
    assert [lr for lr, _ in tried[first + 1:]] == [divergent * 0.5]


def test_raising_trials_extends_a_sweep_and_changing_the_space_is_refused(write_matrix, tmp_path, capsys):
    body = TINY + '[sweep]\nstrategy = "random"\ntrials = {n}\n[sweep.space]\nlr = {{ loguniform = [1e-3, {high}] }}\n'
    outputs = tmp_path / "out"
    assert main(["run", str(write_matrix(body.format(n=1, high=0.1), name="ext")), "--outputs", str(outputs)]) == 0
    first = sweep_studies(outputs, "ext")["all"].trials[0].params
    assert main(["run", str(write_matrix(body.format(n=2, high=0.1), name="ext")), "--outputs", str(outputs)]) == 0
    extended = sweep_studies(outputs, "ext")["all"].trials
    assert len(extended) == 2 and extended[0].params == first
    assert extended[1].params == reference_proposals(
        {"strategy": "random", "trials": 2, "space": {"lr": {"loguniform": [1e-3, 0.1]}}}, 2)[1]
    capsys.readouterr()
    assert main(["run", str(write_matrix(body.format(n=2, high=0.2), name="ext")), "--outputs", str(outputs)]) == 2
    assert "changed since" in capsys.readouterr().err


def test_diverged_trials_count_what_they_spent_toward_max_time(write_matrix, tmp_path):
    # Every trial diverges at its first log; each spends some training time, so a budget of one
    # microsecond is used up by the first trial. Diverged trials used to count as free: all 4 ran.
    path = write_matrix(TINY.replace('optimizer = "adam"', 'optimizer = "sgd"') + """
[sweep]
strategy = "random"
trials = 4
max_time = 1e-6
[sweep.space]
lr = { loguniform = [1e5, 1e6] }
""", name="spent")
    outputs = tmp_path / "out"
    main(["run", str(path), "--outputs", str(outputs)])
    cells = summaries(outputs, "spent")
    assert [s["status"] for s in cells.values()] == ["diverged"]
    used = next(iter(cells.values()))["budget_used"]
    assert used["time_s"] > 0 and used["steps"] == 4 and used["flops"] > 0
