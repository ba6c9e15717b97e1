"""Sweeps that fail as a whole, or whose storage is damaged: one line and an exit status that says so."""

from __future__ import annotations

import pytest
import torch

from bench import commands
from bench.cli import main
from bench.components import Component
from bench.hookspecs import hookimpl
from bench.registry import load_plugins

SWEEP = """
[defaults]
dataset = "synthetic"
vocab_size = 16
train_tokens = 3000
valid_tokens = 300
test_tokens = 300
seq_len = 16
batch_size = 4
max_steps = 4
n_hidden = 16
log_every = 2
memory_interval_ms = 0
model = "lstm"
optimizer = "OPTIMIZER"
[sweep]
strategy = "random"
trials = 2
[sweep.space]
lr = { loguniform = [1e-3, 1e-1] }
"""


class FailingSGD(torch.optim.SGD):
    def step(self, closure=None):
        raise MemoryError("out of memory")  # as a trial too large for the device fails


class Plugin:
    @hookimpl
    def bench_optimizers(self):
        return [Component("failing-sgd", lambda params, *, lr, device_type: FailingSGD(params, lr=lr), {})]


def test_a_sweep_whose_every_trial_failed_exits_one(write_matrix, tmp_path, monkeypatch, capsys):
    """Issue 18: it exited 0."""
    monkeypatch.setattr(commands, "load_plugins", lambda selection=None: load_plugins(selection, [Plugin()]))
    path = write_matrix(SWEEP.replace("OPTIMIZER", "failing-sgd"), name="doomed")
    assert main(["run", str(path), "--outputs", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "bench: every trial of sweep group 'all' failed (2 oom); the reason of each is in its summary.json" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("damage", ["truncated", "garbled"])
def test_a_damaged_sweep_db_is_one_line_and_the_report_shows_the_rest(write_matrix, tmp_path, capsys, damage):
    """Issue 18: a truncated or garbled sweep.db killed `bench run` and `bench report` with an 80-95 line
    SQLAlchemy traceback. (The first run also checks that a sweep with finished trials exits 0.)"""
    path, outputs = write_matrix(SWEEP.replace("OPTIMIZER", "sgd"), name="fine"), tmp_path / "out"
    assert main(["run", str(path), "--outputs", str(outputs)]) == 0
    err = capsys.readouterr().err
    assert "every trial" not in err and "trial 0:" in err and "trial 1:" in err
    db = outputs / "fine" / "sweep.db"
    db.write_bytes(db.read_bytes()[:5000] if damage == "truncated" else b"garbage " * 200)
    reason = "database disk image is malformed" if damage == "truncated" else "file is not a database"
    line = (f"{db} is damaged ({reason}); move it aside (mv {db} {db}.corrupt) and run the sweep again: its "
            "search starts over, and every proposed trial whose cell already finished is reused, not retrained")

    assert main(["run", str(path), "--outputs", str(outputs)]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"bench: error: {line}"
    assert main(["report", "--outputs", str(outputs)]) == 0
    out, err = capsys.readouterr()
    assert err == f"bench: warning: {line}; its sweep tables are left out of this report\n"
    assert "fine: perplexity" in out and "sweep trials" not in out

    db.rename(db.with_name("sweep.db.corrupt"))  # what the line says to do
    assert main(["run", str(path), "--outputs", str(outputs)]) == 0
    err = capsys.readouterr().err
    assert "trial 0:" not in err and "trial 1:" not in err  # both trials' cells reused, none retrained
