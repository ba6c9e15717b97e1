"""Optimizer checks: ``factory(params, *, lr, device_type, **hparams) -> torch.optim.Optimizer``.

The problem is a tiny language model (token table, a hidden matrix with bias, a LayerNorm, an
untied head) with its parameters tagged by role as bench's trainer tags them, trained on a new
random batch every step, so gradients vary from step to step. Everything runs on CPU, where the
comparisons are bitwise. An optimizer that declares the train/eval switch (see "Optimizer modes"
in :mod:`bench.hookspecs`) is driven as bench's trainer drives it: train mode before stepping, eval
mode around the checkpoint of the round trip, and :func:`check_train_eval_modes` checks the switch.
"""

from __future__ import annotations

import copy
import io
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
from torch import nn
from torch.nn import functional as F

from bench.components import Component
from bench.lm import LanguageModel
from bench.optimizer_modes import evaluating, has_modes, training
from bench.param_roles import role_of, tag_parameter_roles
from bench.testing.kit import KindChecks, require

VOCAB, WIDTH, BATCH, SEQ = 11, 8, 4, 6
ROUND_TRIP_STEPS = 3  # k steps, save, load into fresh objects, k more; against 2k uninterrupted


class ToyLM(LanguageModel):
    """Just enough of a language model to give every parameter role a member."""

    def __init__(self) -> None:
        super().__init__()
        self.vocab_size = VOCAB
        self.embed = nn.Embedding(VOCAB, WIDTH)
        self.hidden = nn.Linear(WIDTH, WIDTH)
        self.norm = nn.LayerNorm(WIDTH)
        self.head = nn.Linear(WIDTH, VOCAB, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.embed(idx)
        return self.head(x + torch.tanh(self.hidden(self.norm(x))))

    def flops_per_token(self, seq_len: int) -> int:
        return 6 * (WIDTH * WIDTH + WIDTH * VOCAB)


@dataclass
class OptimizerCase:
    component: Component
    lr: float
    hparams: dict[str, Any] = field(default_factory=dict)

    def build(self, seed: int = 0, lr: float | None = None) -> tuple[ToyLM, torch.optim.Optimizer]:
        torch.manual_seed(seed)
        model = ToyLM()
        tag_parameter_roles(model)
        opt = self.component.factory(model.parameters(), lr=self.lr if lr is None else lr, device_type="cpu",
                                     **self.hparams)
        require(isinstance(opt, torch.optim.Optimizer),
                f"factory returned {type(opt).__name__}, not a torch.optim.Optimizer")
        return model, opt


def make_case(component: Component, overrides: Mapping[str, Any]) -> OptimizerCase:
    hparams = {**component.defaults, **overrides}
    lr = float(hparams.pop("lr", 1e-3))
    return OptimizerCase(component, lr, hparams)


def loss_at(model: nn.Module, step: int) -> torch.Tensor:
    """The loss on step ``step``'s own random batch."""
    idx = torch.randint(0, VOCAB, (BATCH, SEQ + 1), generator=torch.Generator().manual_seed(1000 + step))
    return F.cross_entropy(model(idx[:, :-1]).flatten(0, 1), idx[:, 1:].flatten())


def train(model: nn.Module, opt: torch.optim.Optimizer, steps: range) -> None:
    training(opt)  # as the trainer does before stepping (a no-op without the switch)
    for step in steps:
        opt.zero_grad(set_to_none=True)
        loss_at(model, step).backward()
        opt.step()


def _differences(a: nn.Module, b: nn.Module) -> list[str]:
    return [name for (name, pa), pb in zip(a.named_parameters(), b.parameters()) if not torch.equal(pa, pb)]


def check_returns_optimizer(case: OptimizerCase) -> None:
    model, opt = case.build()
    grouped = [id(p) for group in opt.param_groups for p in group["params"]]
    require(len(grouped) == len(set(grouped)), "a parameter appears in more than one param group")
    missing = [name for name, p in model.named_parameters() if id(p) not in set(grouped)]
    require(not missing, f"parameters {missing} are in no param group, so they would never train")
    require(all("lr" in group for group in opt.param_groups), "every param group needs an 'lr' entry")


def check_step_changes_parameters(case: OptimizerCase) -> None:
    """Two steps move every parameter: some methods spend their first step only measuring the
    gradient (ADOPT initialises its second moment, SOAP its preconditioner), as their papers do."""
    model, opt = case.build()
    before = copy.deepcopy(model)
    train(model, opt, range(2))
    moved = set(_differences(model, before))
    stuck = [f"{name} ({role_of(p)})" for name, p in model.named_parameters() if name not in moved]
    require(not stuck, f"two steps at lr={case.lr} left {stuck} unchanged although they had gradients")


def check_deterministic(case: OptimizerCase) -> None:
    (a, opt_a), (b, opt_b) = case.build(), case.build()
    train(a, opt_a, range(2 * ROUND_TRIP_STEPS))
    train(b, opt_b, range(2 * ROUND_TRIP_STEPS))
    differ = _differences(a, b)
    require(not differ, f"two identical runs ended with different {differ}; the optimizer must be deterministic on CPU")


def _reload(state: dict[str, Any]) -> dict[str, Any]:
    """Through bytes exactly as a checkpoint goes (weights_only: no pickled code)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    loaded: dict[str, Any] = torch.load(buffer, weights_only=True)
    return loaded


def check_state_round_trip(case: OptimizerCase) -> None:
    k = ROUND_TRIP_STEPS
    whole, whole_opt = case.build()
    train(whole, whole_opt, range(k))
    with evaluating(whole_opt):  # where the trainer switches for its checkpoint (nothing without the switch)
        pass
    train(whole, whole_opt, range(k, 2 * k))
    first, first_opt = case.build()
    train(first, first_opt, range(k))
    with evaluating(first_opt):  # bench checkpoints in eval mode
        saved_model, saved_opt = _reload(first.state_dict()), _reload(first_opt.state_dict())
    resumed, resumed_opt = case.build(seed=1)  # fresh objects: nothing carries over but the saved state
    resumed.load_state_dict(saved_model)
    resumed_opt.load_state_dict(saved_opt)
    train(resumed, resumed_opt, range(k, 2 * k))
    differ = _differences(resumed, whole)
    require(not differ, f"{k} steps + state_dict save/load + {k} steps differ from {2 * k} uninterrupted steps in "
            f"{differ}: load_state_dict must restore every buffer (momentum, step counts, ...) so resuming is exact")


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def check_train_eval_modes(case: OptimizerCase) -> None:
    """The optional switch: both methods or neither; eval() and train() idempotent; train() after
    eval() gives the training weights back; steps after an evaluation go on from them."""
    model, opt = case.build()
    declared = [name for name in ("train", "eval") if callable(getattr(opt, name, None))]
    require(len(declared) in (0, 2), f"the optimizer defines {declared}() but not both train() and eval(); "
            "define both to declare the train/eval switch, or neither")
    if not has_modes(opt):
        return
    train(model, opt, range(ROUND_TRIP_STEPS))
    training_weights = _snapshot(model)
    switch: Any = opt  # has train() and eval(): checked above
    switch.train()
    require(all(torch.equal(p, training_weights[n]) for n, p in model.named_parameters()),
            "train() in train mode changed the parameters; each switch must be idempotent")
    switch.eval()
    evaluation_weights = _snapshot(model)
    switch.eval()
    require(all(torch.equal(p, evaluation_weights[n]) for n, p in model.named_parameters()),
            "eval() in eval mode changed the parameters; each switch must be idempotent")
    switch.train()
    back = [n for n, p in model.named_parameters() if not torch.allclose(p, training_weights[n], rtol=1e-5, atol=1e-6)]
    require(not back, f"train() after eval() did not give back the training weights of {back}")
    train(model, opt, range(ROUND_TRIP_STEPS, 2 * ROUND_TRIP_STEPS))  # stepping after an evaluation still works
    require(all(torch.isfinite(p).all() for p in model.parameters()), "steps after an eval/train switch gave NaN")


def check_uses_group_lr(case: OptimizerCase) -> None:
    """bench's schedules set ``param_groups[i]["lr"]`` before every step; the step must follow it."""
    n_groups = len(case.build()[1].param_groups)
    for i in range(n_groups):
        (base, base_opt), (scaled, scaled_opt) = case.build(), case.build()
        train(base, base_opt, range(1))
        train(scaled, scaled_opt, range(1))
        scaled_opt.param_groups[i]["lr"] = scaled_opt.param_groups[i]["lr"] * 0.25
        train(base, base_opt, range(1, 2))
        train(scaled, scaled_opt, range(1, 2))
        ids = {id(p) for p in scaled_opt.param_groups[i]["params"]}
        names = [name for name, p in scaled.named_parameters() if id(p) in ids]
        require(set(names) & set(_differences(base, scaled)),
                f"setting param_groups[{i}]['lr'] to a quarter did not change the step of {names}: the optimizer "
                "ignores the group's lr, so every learning-rate schedule would silently do nothing")


def check_skips_parameters_without_grad(case: OptimizerCase) -> None:
    model, opt = case.build()
    before = model.hidden.weight.detach().clone()
    opt.zero_grad(set_to_none=True)
    loss_at(model, 0).backward()
    model.hidden.weight.grad = None  # as for a parameter the forward pass did not use
    training(opt)
    opt.step()
    require(torch.equal(model.hidden.weight, before),
            "a parameter whose .grad is None changed in step(); leave such parameters untouched")


def check_rejects_negative_lr(case: OptimizerCase) -> None:
    try:
        case.build(lr=-1.0)
    except ValueError:
        return
    require(False, "lr=-1.0 must raise ValueError in the factory, so bench reports it before training starts")


KIND = KindChecks("optimizer", (
    check_returns_optimizer, check_step_changes_parameters, check_deterministic, check_state_round_trip,
    check_uses_group_lr, check_skips_parameters_without_grad, check_rejects_negative_lr, check_train_eval_modes,
), make_case)
