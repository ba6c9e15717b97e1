"""The optional train/eval switch: the trainer evaluates and checkpoints in eval mode, trains in
train mode, and a Schedule-Free cell resumes exactly."""

from __future__ import annotations

import pytest
import schedulefree
import torch

from bench import optimizer_modes
from bench.cells import Cell, cell_id, resolve_config
from bench.components import Component
from bench.hookspecs import hookimpl
from bench.registry import build_registry, plugin_manager
from bench.store import ResultStore
from bench.training import Halted, train_cell

TINY = dict(dataset="synthetic", vocab_size=16, train_tokens=4000, valid_tokens=600, test_tokens=600, seq_len=16,
            batch_size=8, model="gpt1", n_layer=1, n_embd=16, n_head=2, n_positions=32, log_every=5,
            steps_per_epoch=10, epochs=2, schedule="constant")


class Silent:
    def __getattr__(self, name):
        return lambda **kwargs: None


class SpyScheduleFree(schedulefree.AdamWScheduleFree):
    """The real Schedule-Free AdamW, noting its mode whenever bench saves its state or steps."""

    made: list[SpyScheduleFree] = []

    def __init__(self, params, **hparams):
        super().__init__(params, **hparams)
        self.modes: list[tuple[str, bool]] = []
        SpyScheduleFree.made.append(self)

    def mode(self) -> bool:
        return bool(self.param_groups[0]["train_mode"])

    def state_dict(self):
        self.modes.append(("state_dict", self.mode()))
        return super().state_dict()

    def step(self, closure=None):
        self.modes.append(("step", self.mode()))
        return super().step(closure)


class SpyPlugin:
    @hookimpl
    def bench_optimizers(self):
        return [Component("spy-schedulefree", lambda params, *, lr, device_type: SpyScheduleFree(params, lr=lr), {})]


def registry_with_spy():
    pm = plugin_manager()
    pm.register(SpyPlugin(), name="spy")
    return build_registry(pm)


def train(tmp_path, registry, **settings):
    config = resolve_config({**TINY, **settings}, registry, "test")
    cell = Cell(cell_id(config), "test-cell", config)
    record = ResultStore(tmp_path, "modes").cell(cell.id)
    return train_cell(cell, registry, Silent(), torch.device("cpu"), record, say=lambda line: None), record


def test_the_trainer_evaluates_and_checkpoints_in_eval_mode_and_steps_in_train_mode(tmp_path, monkeypatch):
    from bench.training import run as run_module

    evaluated_in: list[bool] = []
    real_evaluate = run_module.evaluate

    def spying_evaluate(model, *args, **kwargs):
        evaluated_in.append(SpyScheduleFree.made[-1].mode())
        return real_evaluate(model, *args, **kwargs)

    monkeypatch.setattr(run_module, "evaluate", spying_evaluate)
    SpyScheduleFree.made.clear()
    summary, _ = train(tmp_path, registry_with_spy(), optimizer="spy-schedulefree", lr=3e-3, eval_every=5,
                       checkpoint_every=5)
    assert summary["status"] == "ok"
    opt = SpyScheduleFree.made[-1]
    steps = [mode for what, mode in opt.modes if what == "step"]
    saves = [mode for what, mode in opt.modes if what == "state_dict"]
    assert len(steps) == 20 and all(steps)  # every step in train mode
    assert len(saves) >= 4 and not any(saves)  # every checkpoint in eval mode
    # Four validation passes in eval mode; the test split last, on the best weights (copied in eval mode)
    # loaded into the model, so the optimizer's mode no longer matters there.
    *validations, _test = evaluated_in
    assert len(validations) == 4 and not any(validations)


def test_halting_and_continuing_schedulefree_gives_the_uninterrupted_curve(tmp_path):
    registry = build_registry(plugin_manager())
    settings = dict(optimizer="schedulefree-adamw", lr=3e-3)
    whole, whole_record = train(tmp_path / "whole", registry, **settings)
    with pytest.raises(Halted):
        train(tmp_path / "halted", registry, halt_at_step=7, **settings)
    resumed, record = train(tmp_path / "halted", registry, **settings)
    assert resumed["resumed_at_steps"] == [7]

    def curve(r):
        return [(row.get("train_loss"), row.get("val_loss")) for row in r.read_metrics() if row["kind"] != "step"]
    assert curve(record) == curve(whole_record)
    assert resumed["test_loss"] == whole["test_loss"]


def test_evaluating_switches_only_optimizers_that_declare_it():
    weight = torch.nn.Parameter(torch.ones(3))
    opt = schedulefree.AdamWScheduleFree([weight], lr=0.1)
    optimizer_modes.training(opt)
    for step in range(3):
        weight.grad = torch.tensor([1.0, -2.0, 3.0]) * (step + 1)
        opt.step()
    training_weight = weight.detach().clone()
    with optimizer_modes.evaluating(opt):
        assert not opt.param_groups[0]["train_mode"]
        assert not torch.equal(weight, training_weight)  # the averaged point, not the training one
    assert opt.param_groups[0]["train_mode"]
    assert torch.allclose(weight, training_weight)
    plain = torch.optim.SGD([weight], lr=0.1)
    assert not optimizer_modes.has_modes(plain)
    with optimizer_modes.evaluating(plain):  # nothing to switch
        pass
