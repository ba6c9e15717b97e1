"""The step loop: divergence, budgets, halting and the faults that must end only their own cell."""

from __future__ import annotations

import math
import sys

import pytest
import torch

from bench import cli, commands
from bench.cells import Cell, cell_id, resolve_config
from bench.components import Component
from bench.evaluation.perplexity import format_ppl
from bench.hookspecs import hookimpl
from bench.registry import build_registry, load_plugins, plugin_manager
from bench.runner import run_cells
from bench.store import ResultStore
from bench.training import Diverged, Halted, LoopState, train_cell
from bench_plugins.models.lstm import DEFAULTS as LSTM_DEFAULTS
from bench_plugins.models.lstm import LSTMLanguageModel

REGISTRY = build_registry(plugin_manager())
TINY = dict(dataset="synthetic", vocab_size=16, train_tokens=4000, valid_tokens=600, test_tokens=600, seq_len=16,
            batch_size=8, n_layer=1, n_embd=16, n_hidden=16, n_head=2, n_positions=32, log_every=5,
            steps_per_epoch=10)


class Silent:
    def __getattr__(self, name):
        return lambda **kwargs: None


def make_cell(registry=REGISTRY, **settings) -> Cell:
    config = resolve_config({**TINY, **settings}, registry, "test")
    return Cell(cell_id(config), "test-cell", config)


def train(tmp_path, registry=REGISTRY, loop=None, stop=None, **settings):
    cell = make_cell(registry, **settings)
    record = ResultStore(tmp_path, "loop").cell(cell.id)
    return train_cell(cell, registry, Silent(), torch.device("cpu"), record, loop=loop, stop=stop,
                      say=lambda line: None), record


def test_a_huge_but_finite_loss_is_divergence_not_ok(tmp_path):
    # lstm + SGD at lr 1e6 used to finish "ok" with ~1e5 nats/token and a 300-digit perplexity.
    with pytest.raises(Exception) as caught:
        train(tmp_path, model="lstm", optimizer="sgd", lr=1e6, epochs=1)
    assert type(caught.value).__name__ == "Diverged"
    assert "is above 7.773 (ln(vocab) + divergence_margin): worse than uniform guessing" in str(caught.value)
    # With the margin off the cell finishes, and its perplexity prints as what it is, not 300 digits.
    summary, _ = train(tmp_path / "off", model="lstm", optimizer="sgd", lr=1e6, epochs=1, divergence_margin=0.0)
    assert format_ppl(summary["best_val_ppl"]) in ("inf", ">1e6")


def test_the_margin_is_measured_from_uniform_guessing(tmp_path):
    # A loss just above ln(vocab) is a slow start, not divergence: the default margin lets it train.
    summary, _ = train(tmp_path, model="lstm", optimizer="adamw", lr=3e-3, epochs=1)
    assert summary["status"] == "ok"
    assert summary["best_val_loss"] < math.log(16) + 5.0


class StopAfter:
    """A stop request that arrives after ``n`` reads (one read per optimizer step)."""

    def __init__(self, n: int):
        self.n, self.cause = n, "SIGTERM"

    @property
    def requested(self) -> bool:
        self.n -= 1
        return self.n < 0


def test_worst_step_10_19_survives_a_resume_after_step_19(tmp_path):
    settings = dict(model="lstm", optimizer="adamw", epochs=3, checkpoint_every=5)
    with pytest.raises(Exception) as caught:
        train(tmp_path, stop=StopAfter(25), **settings)
    assert type(caught.value).__name__ == "Interrupted" and caught.value.step == 26
    summary, _ = train(tmp_path, **settings)
    assert summary["resumed_at_steps"] == [26]
    assert len(summary["step_times_10_19_s"]) == 10 and summary["worst_step_10_19_s"] > 0


def test_flop_and_token_budgets_fix_the_steps_before_training(tmp_path):
    cell = make_cell(model="gpt1", optimizer="adamw", max_tokens=8 * 16 * 7 + 5)
    summary, _ = train(tmp_path, model="gpt1", optimizer="adamw", max_tokens=8 * 16 * 7 + 5)
    assert summary["steps"] == 7 and summary["train_tokens"] == 7 * 128
    per_step = summary["flops_per_token"] * 128
    summary, _ = train(tmp_path / "f", model="gpt1", optimizer="adamw", max_flops=float(per_step * 12 + 1))
    assert summary["steps"] == 12
    assert summary["budget"] == {"max_flops": per_step * 12 + 1}
    assert summary["budget_used"]["flops"] == per_step * 12 <= summary["budget"]["max_flops"]
    assert summary["stopped_by"] is None and cell.config["max_tokens"] == 901


def test_a_budget_that_leaves_no_step_is_refused_at_resolve_time():
    with pytest.raises(Exception, match="max_tokens = 100 is less than one step's 128 tokens"):
        make_cell(model="lstm", optimizer="adamw", max_tokens=100)
    with pytest.raises(Exception, match="max_flops = 1 is less than one step's"):
        make_cell(model="lstm", optimizer="adamw", max_flops=1.0)


def test_time_and_cost_budgets_stop_after_the_first_step_past_them(tmp_path):
    summary, record = train(tmp_path, model="lstm", optimizer="adamw", epochs=50, max_time=0.3)
    assert summary["stopped_by"] == "max_time" and summary["steps"] < 500
    assert summary["train_time_s"] >= 0.3 and summary["budget_used"]["time_s"] == summary["train_time_s"]
    assert record.read_metrics()[-1]["kind"] == "epoch"  # the cut-short epoch was still validated
    summary, _ = train(tmp_path / "c", model="lstm", optimizer="adamw", epochs=50, max_cost=1e-4,
                       cost_per_hour=1.0)
    assert summary["stopped_by"] == "max_cost" and summary["budget_used"]["cost"] >= 1e-4


def test_halting_and_continuing_gives_the_uninterrupted_curve(tmp_path):
    settings = dict(model="gpt1", optimizer="adam", epochs=3, log_every=2, dropout=0.1)
    whole, whole_record = train(tmp_path / "whole", **settings)
    for halt in (7, 20):
        with pytest.raises(Halted) as caught:
            train(tmp_path / "halted", halt_at_step=halt, **settings)
        assert caught.value.step == halt and "val_loss" in caught.value.validation
    resumed, record = train(tmp_path / "halted", **settings)
    assert resumed["resumed_at_steps"] == [7, 20]
    def curve(r):
        return [(row.get("train_loss"), row.get("val_loss")) for row in r.read_metrics() if row["kind"] != "step"]
    assert curve(record) == curve(whole_record)
    assert resumed["test_loss"] == whole["test_loss"]


class ExitingLSTM(LSTMLanguageModel):
    """A plugin model whose third forward does what a careless plugin might: exit or interrupt."""

    def __init__(self, vocab_size, *, how, **hparams):
        super().__init__(vocab_size, **hparams)
        self.how, self.calls = how, 0

    def forward(self, idx):
        self.calls += 1
        if self.calls == 3:
            if self.how == "exit":
                sys.exit(3)
            raise KeyboardInterrupt("raised by plugin code")
        return super().forward(idx)


class ExitPlugin:
    @hookimpl
    def bench_models(self):
        return [Component("exiting-lstm", lambda vocab_size, **hp: ExitingLSTM(vocab_size, **hp),
                          {**LSTM_DEFAULTS, "how": "exit"})]


def test_sys_exit_or_keyboard_interrupt_in_a_cell_ends_only_that_cell(tmp_path, write_matrix, monkeypatch, capsys):
    monkeypatch.setattr(commands, "load_plugins", lambda selection=None: load_plugins(selection, [ExitPlugin()]))
    path = write_matrix("""
        [defaults]
        dataset = "synthetic"
        vocab_size = 16
        seq_len = 16
        batch_size = 8
        steps_per_epoch = 5
        n_embd = 16
        n_hidden = 16
        optimizer = "adamw"
        [matrix]
        include = [{ model = "exiting-lstm", how = "exit" }, { model = "exiting-lstm", how = "interrupt" },
                   { model = "lstm" }]
        """, name="exits")
    assert cli.main(["run", str(path), "--device", "cpu", "--outputs", str(tmp_path / "out")]) == 1
    statuses = {s["config"]["model"] + s["config"].get("how", ""): (s["status"], s.get("reason"))
                for s in ResultStore(tmp_path / "out", "exits").summaries()}
    assert statuses["lstm"][0] == "ok"
    assert statuses["exiting-lstmexit"] == ("error", "SystemExit: 3")
    assert statuses["exiting-lstminterrupt"] == ("error", "KeyboardInterrupt: raised by plugin code")


def test_a_real_second_signal_still_stops_the_matrix(tmp_path):
    class Forced:  # the state GracefulStop is in when a second signal raises KeyboardInterrupt
        requested, forced, cause = False, True, "SIGINT"

    plugin_registry = build_registry(plugin_manager(extra_plugins=[ExitPlugin()]))
    cell = make_cell(plugin_registry, model="exiting-lstm", optimizer="adamw", how="interrupt")
    with pytest.raises(KeyboardInterrupt):
        run_cells([cell], registry=plugin_registry, hooks=Silent(), store=ResultStore(tmp_path, "m"),
                  device=torch.device("cpu"), stop=Forced(), say=lambda line: None)


def test_a_cpu_allocation_failure_is_out_of_memory(tmp_path):
    # Real allocator failure: the weights of a 2**21-wide layer do not fit any machine's RAM.
    said = []
    cell = make_cell(model="gpt1", optimizer="adamw", n_embd=2**21, n_head=2)
    outcome = run_cells([cell], registry=REGISTRY, hooks=Silent(), store=ResultStore(tmp_path, "m"),
                        device=torch.device("cpu"), say=said.append)
    summary = ResultStore(tmp_path, "m").cell(cell.id).read_summary()
    assert outcome.failed == {"test-cell": "oom"} and summary["status"] == "oom"
    assert "can't allocate memory" in summary["reason"]


def test_the_loop_state_reports_where_a_failed_cell_was(tmp_path):
    loop = LoopState()
    with pytest.raises(Diverged):
        train(tmp_path, loop=loop, model="lstm", optimizer="sgd", lr=1e6)
    assert loop.step > 0 and loop.total_steps == 10 and loop.memory["source"]


def test_wikitext2_cells_report_per_word_perplexity(tmp_path):
    summary, _ = train(tmp_path, model="lstm", optimizer="adamw", dataset="wikitext2", tokenizer="byte",
                       max_chars=6000, steps_per_epoch=3, log_every=1)
    words = summary["eval_words"]["test"]
    assert 0 < words < 6000
    expected = math.exp(summary["test_loss"] * summary["eval_tokens"]["test"] / words)
    assert summary["test_word_ppl"] == pytest.approx(expected, rel=1e-9)
    assert summary["best_val_word_ppl"] > summary["best_val_ppl"]  # several bytes per word
    assert summary["eval_windows"].startswith("non-overlapping windows of 16 tokens")


def test_a_failed_background_checkpoint_fails_the_cell_before_its_summary(tmp_path, monkeypatch):
    import bench.checkpoint

    real_save, saved = torch.save, []

    def full_disk_after_the_first(obj, f):  # the first save is synchronous; the last one fails
        saved.append(obj["step"])
        if obj["step"] == 20:
            raise OSError(28, "No space left on device")
        real_save(obj, f)

    monkeypatch.setattr(bench.checkpoint.torch, "save", full_disk_after_the_first)
    with pytest.raises(OSError, match="No space left"):
        train(tmp_path, model="lstm", optimizer="adamw", epochs=2, checkpoint_every=5, checkpoint_async=True)
    assert saved == [5, 10, 15, 20]  # the last write failed in the thread; the trainer waited and raised it
    record = ResultStore(tmp_path, "loop").cell(make_cell(model="lstm", optimizer="adamw", epochs=2).id)
    assert record.read_summary() is None


def test_bounded_validation_scores_the_same_windows_every_pass(tmp_path, monkeypatch):
    from bench.data import samplers
    from bench.report.frame import summaries_frame
    from bench.report.tables import bounded_evaluation_notes

    passes = []
    real = samplers.evaluation_windows

    def recording(lengths, seq_len, stride=None, limit=0):
        windows = list(real(lengths, seq_len, stride, limit))
        passes.append(windows)
        return iter(windows)

    monkeypatch.setattr(samplers, "evaluation_windows", recording)
    summary, _ = train(tmp_path, model="lstm", optimizer="adamw", epochs=3, val_windows=5, test_windows=-1)
    validations, test = passes[:3], passes[3]  # three epoch ends, then the test pass (the summary counts after)
    assert len(validations) == 3 and all(v == validations[0] for v in validations) and len(validations[0]) == 5
    assert len(test) == len(list(real([600], 16)))  # the whole test split
    assert summary["eval_tokens"]["valid"] == sum(w[3] for w in validations[0]) == 5 * 16
    assert "valid: 5 fixed windows evenly spaced over the split, test: full split" in summary["eval_windows"]
    notes = bounded_evaluation_notes(summaries_frame([summary]))
    assert len(notes) == 1 and "5 fixed windows" in notes[0]
