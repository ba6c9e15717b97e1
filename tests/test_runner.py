"""Fault injection: failing cells end alone, with the right status, and the matrix goes on."""

from __future__ import annotations

import json
import re
import threading
import weakref

import pytest
import torch

from bench import cli, commands
from bench.components import Component
from bench.hookspecs import hookimpl
from bench.registry import load_plugins
from bench.store import ResultStore
from bench_plugins.models.lstm import DEFAULTS as LSTM_DEFAULTS
from bench_plugins.models.lstm import LSTMLanguageModel
from tests.conftest import TINY_DEFAULTS

LIVE_MODELS: list[weakref.ref] = []


class NanSGD(torch.optim.SGD):
    """Plain SGD that writes NaN into every weight at step ``nan_at_step`` (1-based)."""

    def __init__(self, params, lr, nan_at_step):
        super().__init__(params, lr=lr)
        self.nan_at_step, self.steps = nan_at_step, 0

    @torch.no_grad()
    def step(self, closure=None):
        super().step(closure)
        self.steps += 1
        if self.steps == self.nan_at_step:
            for group in self.param_groups:
                for p in group["params"]:
                    p.fill_(float("nan"))


class KickedSGD(torch.optim.SGD):
    """SGD that adds large (finite) noise to the weights once, at step ``kick_at_step``."""

    def __init__(self, params, lr, kick_at_step):
        super().__init__(params, lr=lr)
        self.kick_at_step, self.steps = kick_at_step, 0

    @torch.no_grad()
    def step(self, closure=None):
        super().step(closure)
        self.steps += 1
        if self.steps == self.kick_at_step:
            generator = torch.Generator().manual_seed(0)
            for group in self.param_groups:
                for p in group["params"]:
                    p.add_(torch.randn(p.shape, generator=generator) * 3.0)


class RaisingLSTM(LSTMLanguageModel):
    """A buggy third-party model: its ``raise_at_call``-th forward raises."""

    def __init__(self, vocab_size, *, raise_at_call, **hparams):
        super().__init__(vocab_size, **hparams)
        self.raise_at_call, self.calls = raise_at_call, 0
        LIVE_MODELS.append(weakref.ref(self))

    def forward(self, idx):
        self.calls += 1
        if self.calls == self.raise_at_call:
            raise RuntimeError("simulated bug in a model plugin")
        return super().forward(idx)


class OomLSTM(LSTMLanguageModel):
    """Raises the out-of-memory error CUDA raises, for any batch wider than ``fits_batch``."""

    def __init__(self, vocab_size, *, fits_batch, **hparams):
        super().__init__(vocab_size, **hparams)
        self.fits_batch = fits_batch
        LIVE_MODELS.append(weakref.ref(self))

    def forward(self, idx):
        if idx.shape[0] > self.fits_batch:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (simulated)")
        return super().forward(idx)


class FaultPlugin:
    ended: list[str] = []  # statuses passed to bench_run_end, which fires for failed cells too

    @hookimpl
    def bench_run_end(self, cell, summary):
        self.ended.append(summary["status"])

    @hookimpl
    def bench_optimizers(self):
        return [Component("nan-sgd", lambda params, *, lr, device_type, nan_at_step: NanSGD(params, lr, nan_at_step),
                          {"nan_at_step": 7}),
                Component("kicked-sgd", lambda params, *, lr, device_type, kick_at_step:
                          KickedSGD(params, lr, kick_at_step), {"kick_at_step": 12})]

    @hookimpl
    def bench_models(self):
        return [Component("raising-lstm", lambda vocab_size, **hp: RaisingLSTM(vocab_size, **hp),
                          {**LSTM_DEFAULTS, "raise_at_call": 4}),
                Component("oom-lstm", lambda vocab_size, **hp: OomLSTM(vocab_size, **hp),
                          {**LSTM_DEFAULTS, "fits_batch": 4})]


MATRIX = TINY_DEFAULTS + """
model = "lstm"
optimizer = "adamw"
lr = 0.01

[matrix]
include = [
    { optimizer = "nan-sgd", nan_at_step = 7 },
    { model = "raising-lstm", raise_at_call = 4 },
    { model = "oom-lstm" },
    { model = "oom-lstm", oom_retry = true },
    { optimizer = "kicked-sgd", lr = 0.05, divergence_factor = 1.5 },
    { optimizer = "sgd" },
]
"""


@pytest.fixture
def faulty_cli(monkeypatch, tmp_path):
    monkeypatch.setattr(commands, "load_plugins", lambda selection=None: load_plugins(selection, [FaultPlugin()]))
    outputs = str(tmp_path / "outputs")
    return lambda *args: cli.main([*args, "--outputs", outputs])


def _by_name(outputs) -> dict[str, tuple]:
    """Cells keyed by what makes them special (names also list every include key)."""
    cells = {}
    for record in ResultStore(outputs, "faults").records():
        summary = record.read_summary()
        config = summary["config"]
        key = "retry" if config["oom_retry"] else config["model"] if config["model"] != "lstm" else config["optimizer"]
        cells[key] = (record, summary)
    return cells


def test_failing_cells_get_their_status_and_the_rest_finish(faulty_cli, write_matrix, tmp_path, capsys):
    path = write_matrix(MATRIX, name="faults")
    FaultPlugin.ended.clear()
    assert faulty_cli("run", str(path), "--device", "cpu") == 1  # non-zero: some cells failed

    cells = _by_name(tmp_path / "outputs")
    status = {name: summary["status"] for name, (_, summary) in cells.items()}
    assert status == {"nan-sgd": "diverged", "raising-lstm": "error", "oom-lstm": "oom", "retry": "ok",
                      "kicked-sgd": "diverged", "sgd": "ok"}
    assert sorted(FaultPlugin.ended) == sorted(status.values())

    record, nan = cells["nan-sgd"]
    # NaN weights after step 7; the loss is read every log_every = 5 steps, so step 10 sees it.
    assert nan["step"] == 10 and "nan" in nan["reason"]
    assert "Diverged" in (record.path / "traceback.txt").read_text()

    record, error = cells["raising-lstm"]
    assert error["step"] == 3  # the 4th forward is step 4's: three steps were complete
    assert "simulated bug in a model plugin" in (record.path / "traceback.txt").read_text()

    record, oom = cells["oom-lstm"]
    assert oom["step"] == 0 and oom["reason"].startswith("OutOfMemoryError: CUDA out of memory")
    # Memory sampled up to the failure is kept: what an out-of-memory cell used is worth knowing.
    assert oom["memory"]["samples"] >= 2 and oom["memory"]["source"].startswith("process RSS")
    assert error["memory"]["rss_sampled_peak_bytes"] > 0
    # Each cell's sampler thread stopped with its cell, failed or not.
    assert not [t for t in threading.enumerate() if t.name == "bench-memory-sampler"]

    _, retried = cells["retry"]
    assert (retried["micro_batch_size"], retried["grad_accum_used"]) == (4, 2)
    assert retried["train_tokens"] == 20 * 8 * 16  # the effective batch did not change

    record, kicked = cells["kicked-sgd"]
    assert kicked["step"] == 15 and "running minimum" in kicked["reason"]
    assert not (record.path / "checkpoints").exists()  # its epoch-1 checkpoint went with the verdict

    for record, summary in cells.values():  # every file on disk is complete and parses
        json.loads((record.path / "config.json").read_text())
        if summary["status"] == "ok":
            assert record.read_metrics()[-1]["kind"] == "epoch"
            assert torch.load(record.path / "best.pt", weights_only=True)

    # A failed cell's model is not kept alive (a traceback holding its frames would pin it).
    assert LIVE_MODELS and all(ref() is None for ref in LIVE_MODELS)

    capsys.readouterr()
    assert faulty_cli("report", "--format", "github") == 0
    table = capsys.readouterr().out
    for word in ("diverged", "oom", "error", "ok"):  # the status column (best cells are in bold)
        assert re.search(rf"\|\s*(\*\*)?{word}(\*\*)?\s*\|", table), word


def test_rerun_skips_finished_and_diverged_cells_and_retries_the_others(faulty_cli, write_matrix, tmp_path, capsys):
    path = write_matrix(MATRIX.replace("{ model = \"oom-lstm\", oom_retry = true },\n", ""), name="faults")
    assert faulty_cli("run", str(path), "--device", "cpu", "--filter", "sgd") == 1
    before = {name: (r.path / "summary.json").read_bytes() for name, (r, _) in _by_name(tmp_path / "outputs").items()}
    capsys.readouterr()
    assert faulty_cli("run", str(path), "--device", "cpu") == 1
    err = capsys.readouterr().err
    assert "already diverged at step 10, skipped" in err and "already complete, skipped" in err
    after = {name: (r.path / "summary.json").read_bytes() for name, (r, _) in _by_name(tmp_path / "outputs").items()}
    for name in ("nan-sgd", "sgd", "kicked-sgd"):
        assert after[name] == before[name]
    assert set(after) - set(before) == {"raising-lstm", "oom-lstm"}
