"""The sweep driver hands each round's batches to the executor in one call, and neither the
executor nor a stop in the middle of a batch changes a sweep's trials or results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from bench import cli
from bench.executors.local import LocalExecutor
from bench.matrix import load_matrix
from bench.registry import build_registry, plugin_manager
from bench.runner import lost_cell
from bench.store import ResultStore
from bench.sweep.command import prepare
from bench.sweep.driver import SweepRun
from tests.conftest import sweep_studies
from tests.executors.conftest import results
from tests.sweep.test_sweep_run import TINY

# Two groups; per group R = 3 units of 2 steps, eta = 3: bracket s=1 trains 3 configurations to 2
# steps and the best to 6, bracket s=0 trains 2 configurations to 6 steps.
HYPERBAND = TINY.replace("max_steps = 8\n", "") + """
[matrix]
optimizer = ["sgd", "adam"]
[sweep]
strategy = "hyperband"
per = ["optimizer"]
max_resource = 3
eta = 3
resource_steps = 2
seed = 4
[sweep.space]
lr = { loguniform = [1e-3, 1e-1] }
"""


def sweep_state(outputs: Path) -> tuple[dict[str, list], dict[str, dict[str, Any]]]:
    """Every group's trials (number, params, state, value, facts) and every cell's results
    without timing figures (losses compared exactly)."""
    trials = {name: [(t.number, t.params, t.state.name, t.value, t.user_attrs) for t in study.trials]
              for name, study in sweep_studies(outputs, "hb").items()}
    return trials, results(outputs, "hb")


@pytest.fixture(scope="module")
def matrix_file(hyperband_sweep) -> Path:
    return hyperband_sweep[0]


@pytest.fixture(scope="module")
def reference(hyperband_sweep):
    """The sweep with every cell trained one after another in this process (shared with the Ray test)."""
    return hyperband_sweep[1]


def test_each_round_is_one_executor_call_and_two_jobs_give_the_same_sweep(matrix_file, reference, tmp_path,
                                                                           monkeypatch):
    batches, workers, executors = [], [], []
    execute = LocalExecutor.execute

    def recording(self, cells, spec, session):  # watches the real pool, changes nothing
        batches.append(sorted(session.label(c) for c in cells))
        outcomes = execute(self, cells, spec, session)
        executors.append(self)
        workers.append([w.process for w in self.pool.workers])
        assert spec.plugins is not None  # the workers load the plugins this run selected
        return outcomes

    monkeypatch.setattr(LocalExecutor, "execute", recording)
    outputs = tmp_path / "out"
    assert cli.main(["run", str(matrix_file), "--outputs", str(outputs), "--jobs", "2"]) == 0
    # Rung 0 of both groups' first bracket (3 + 3 cells), then each group's promoted trial (the
    # prunes train nothing), then the second bracket (2 + 2).
    assert [len(b) for b in batches] == [6, 2, 4]
    assert sum(label.startswith("sweep optimizer=sgd") for label in batches[0]) == 3
    assert sweep_state(outputs) == reference
    # The same two worker processes served every round, and ended with the sweep.
    assert len(workers[0]) == 2 and all(w == workers[0] for w in workers)
    assert executors[0].pool is None and not any(p.is_alive() for p in workers[0])


class StopAfterFirstCell:
    """A stop request that arrives once the first trial cell has reached its rung."""

    def __init__(self, outputs: Path):
        self.outputs, self.cause = outputs, "SIGTERM"

    @property
    def requested(self) -> bool:
        return any(json.loads(p.read_text()).get("status") == "paused" for p in self.outputs.glob("hb/*/summary.json"))


def test_a_sweep_stopped_in_the_middle_of_a_batch_resumes_to_the_same_result(matrix_file, reference, tmp_path):
    outputs = tmp_path / "out"
    manager = plugin_manager()
    registry = build_registry(manager)
    matrix = load_matrix(matrix_file)
    spec, groups, _ = prepare(matrix, registry, str(matrix_file))
    sweep = SweepRun(matrix, spec, groups, registry, manager.hook, ResultStore(outputs, "hb"), torch.device("cpu"),
                     stop=StopAfterFirstCell(outputs), say=lambda line: None)
    assert sweep.run() is False and sweep.interrupted == "SIGTERM"
    assert [s["status"] for s in ResultStore(outputs, "hb").summaries()] == ["paused"]  # 1 of the batch's 6
    assert cli.main(["run", str(matrix_file), "--outputs", str(outputs)]) == 0
    assert sweep_state(outputs) == reference


def test_batch_enters_the_fingerprint_only_where_it_changes_proposals(write_matrix, tmp_path, capsys):
    body = TINY + "[sweep]\nstrategy = \"{s}\"\ntrials = 1\n{batch}[sweep.space]\nlr = {{ uniform = [0.01, 0.1] }}\n"
    for strategy in ("random", "tpe"):
        outputs = tmp_path / strategy
        assert cli.main(["run", str(write_matrix(body.format(s=strategy, batch=""), name="fp")),
                         "--outputs", str(outputs)]) == 0
        # The default leaves the fingerprint as it was before `batch` existed: older sweeps replay.
        study = next(iter(sweep_studies(outputs, "fp").values()))
        assert "batch" not in json.loads(study.user_attrs["fingerprint"])["sweep"]
        capsys.readouterr()
        code = cli.main(["run", str(write_matrix(body.format(s=strategy, batch="batch = 2\n"), name="fp")),
                         "--outputs", str(outputs)])
        assert (code, "changed since" in capsys.readouterr().err) == ((0, False) if strategy == "random" else (2, True))


class LosesFirstCell:
    """Fault injection around the real local executor: the first cell of the first batch is
    recorded as its worker dying before it trained (the pool's own lost_cell), the rest train."""

    def __init__(self) -> None:
        self.real, self.lost = LocalExecutor(1), list[str]()

    def execute(self, cells, spec, session):
        if self.lost:
            return self.real.execute(cells, spec, session)
        first, rest = cells[0], cells[1:]
        self.lost.append(first.name)
        record = ResultStore(spec.outputs, spec.matrix).cell(first.id)
        return [lost_cell(first, record, "worker died (injected)", 0, 0, spec.device, session),
                *self.real.execute(rest, spec, session)]


def test_a_cell_whose_worker_died_is_resumed_before_its_trial_is_told(matrix_file, reference, tmp_path):
    outputs, said = tmp_path / "out", []
    manager = plugin_manager()
    registry = build_registry(manager)
    matrix = load_matrix(matrix_file)
    spec, groups, _ = prepare(matrix, registry, str(matrix_file))
    executor = LosesFirstCell()
    sweep = SweepRun(matrix, spec, groups, registry, manager.hook, ResultStore(outputs, "hb"), torch.device("cpu"),
                     executor=executor, say=said.append)
    assert sweep.run() is True and len(executor.lost) == 1
    assert "sweep: 1 cell(s) lost their worker; resuming them from their checkpoints" in said
    assert sweep_state(outputs) == reference  # no trial was told the lost cell's "interrupted"
