"""The FLOP ledger of a sweep: charged as trials start, repeated configurations free, read back from
the store after a restart, and a search that stops where the next trial does not fit."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.cli import main
from bench.errors import ConfigError
from bench.store import ResultStore
from bench.sweep.ledger import CHARGE, REUSED, Ledger, trial_flops
from tests.conftest import sweep_studies
from tests.sweep.test_sweep_run import TINY


def test_trial_flops_is_steps_times_tokens_per_step_times_flops_per_token():
    config = {"max_steps": 8, "max_tokens": 0, "max_flops": 0, "batch_size": 4, "grad_accum": 2, "seq_len": 16,
              "steps_per_epoch": 0, "epochs": 1}
    assert trial_flops(config, 1000.0) == 8 * 4 * 2 * 16 * 1000
    assert trial_flops(config, 1000.0, halt_at_step=2) == 2 * 4 * 2 * 16 * 1000
    with pytest.raises(ConfigError, match="max_steps, max_tokens or max_flops"):
        trial_flops({**config, "max_steps": 0}, 1000.0)


def test_charges_count_once_per_started_cell_and_stop_where_the_next_does_not_fit(tmp_path):
    store = ResultStore(tmp_path, "m")
    store.cell("a").write_config({"id": "a"})  # started
    trials = [{"cell_id": "a", CHARGE: 40.0}, {"cell_id": "a", CHARGE: 60.0},  # a rung later: 60 in all
              {"cell_id": "b", CHARGE: 30.0},  # charged, but killed before it started: not counted
              {"cell_id": "a", REUSED: True}]
    ledger = Ledger.from_store(100.0, store, trials)
    assert (ledger.spent, ledger.left, ledger.reused) == (60.0, 40.0, 1)
    tagged = []
    admitted, stop = ledger.admit([("a", 70.0), ("c", 30.0), ("d", 1.0)], lambda c, f: tagged.append((c, f)))
    assert admitted == ["a", "c"] and tagged == [("a", 70.0), ("c", 30.0)]  # a pays only its extra 10
    assert "100 of 100 FLOPs spent, 0 left; the next trial needs 1," in stop


def test_admit_charges_in_order_until_one_does_not_fit(tmp_path):
    ledger = Ledger(100.0)
    tagged = []
    admitted, stop = ledger.admit([("a", 40.0), ("b", 50.0), ("c", 20.0)], lambda c, f: tagged.append((c, f)))
    assert admitted == ["a", "b"] and tagged == [("a", 40.0), ("b", 50.0)]
    assert "90 of 100 FLOPs spent, 10 left; the next trial needs 20" in stop
    assert ledger.extra("a", 40.0) == 0 and ledger.extra("a", 55.0) == 15


LEDGER = TINY + """
[sweep]
strategy = "random"
trials = {trials}
max_total_flops = {cap}
[sweep.space]
lr = {space}
"""


def _charges(outputs: Path, name: str) -> list[float]:
    return [t.user_attrs[CHARGE] for s in sweep_studies(outputs, name).values() for t in s.trials
            if CHARGE in t.user_attrs]


def test_sweep_stops_at_its_ledger_resumes_from_the_store_and_reuses_repeats(write_matrix, tmp_path, capsys):
    outputs = tmp_path / "out"
    probe = write_matrix(LEDGER.format(trials=1, cap=1e30, space="{ loguniform = [1e-3, 1e-1] }"), name="probe")
    assert main(["run", str(probe), "--outputs", str(outputs)]) == 0
    cost, = _charges(outputs, "probe")  # every trial here costs the same: same model, 8 steps

    path = write_matrix(LEDGER.format(trials=10, cap=2.5 * cost, space="{ loguniform = [1e-3, 1e-1] }"), name="cap")
    assert main(["run", str(path), "--outputs", str(outputs)]) == 0
    err = capsys.readouterr().err
    assert "the next trial needs" in err and "the search stops here" in err
    assert len(_charges(outputs, "cap")) == 2
    cells = {p.name for p in (outputs / "cap").iterdir() if p.is_dir()}

    assert main(["run", str(path), "--outputs", str(outputs)]) == 0  # a rerun (as after a kill) reads the ledger back
    err = capsys.readouterr().err
    assert f"{2 * cost:.3g} of {2.5 * cost:.3g} FLOPs spent" in err and "the search stops here" in err
    assert {p.name for p in (outputs / "cap").iterdir() if p.is_dir()} == cells  # nothing new trained

    assert main(["report", "--outputs", str(outputs), "--matrix", "cap", "--tables", "sweep"]) == 0
    report = capsys.readouterr().out
    assert "FLOP ledger (all groups)" in report and "Left (FLOPs)" in report
    assert "not started: FLOP ledger" in report

    same = write_matrix(LEDGER.format(trials=4, cap=1.5 * cost, space="{ choice = [0.01] }"), name="same")
    assert main(["run", str(same), "--outputs", str(outputs)]) == 0  # one cell, proposed four times
    err = capsys.readouterr().err
    assert "3 repeated configuration(s) reused at no cost" in err
    assert len({p.name for p in (outputs / "same").iterdir() if p.is_dir()}) == 1
