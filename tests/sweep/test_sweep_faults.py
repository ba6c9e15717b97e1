"""Sweeps that fail as a whole, or whose storage is damaged: one line and an exit status that says so."""

from __future__ import annotations

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


def test_a_sweep_with_a_finished_trial_exits_zero(write_matrix, tmp_path, capsys):
    path = write_matrix(SWEEP.replace("OPTIMIZER", "sgd"), name="fine")
    assert main(["run", str(path), "--outputs", str(tmp_path / "out")]) == 0
    assert "every trial" not in capsys.readouterr().err
