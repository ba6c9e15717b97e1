"""Contract checks for plugin authors, in the spirit of scikit-learn's ``check_estimator``.

Call them from your own test suite::

    from bench.testing import check_model, check_optimizer, iter_model_checks

    def test_my_model():
        check_model(my_component, n_layer=2, n_embd=32)   # small overrides keep it fast

    @pytest.mark.parametrize("name, check", list(iter_model_checks(my_component, n_embd=32)))
    def test_my_model_contract(name, check):
        check()

Each check is a small function in :data:`MODEL_CHECKS` that raises ``AssertionError``
with a message saying what the model did wrong. Everything is built on CPU.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
from torch import nn
from torch.nn import functional as F

from bench.components import Component
from bench.lm import LanguageModel, split

BATCH, SEQ = 2, 8


@dataclass
class ModelCase:
    """What every check receives: the component, the vocabulary and the hyperparameters."""

    component: Component
    vocab_size: int
    hparams: dict[str, Any] = field(default_factory=dict)

    def build(self, seed: int = 0, **extra: Any) -> LanguageModel:
        torch.manual_seed(seed)
        model = self.component.factory(self.vocab_size, **{**self.hparams, **extra})
        assert isinstance(model, LanguageModel), (
            f"{self.component.name}: factory returned {type(model).__name__}, not a bench.lm.LanguageModel")
        return model

    def tokens(self, batch: int = BATCH, seq: int = SEQ, seed: int = 1) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return torch.randint(0, self.vocab_size, (batch, seq), generator=g)


def check_attributes(case: ModelCase) -> None:
    model = case.build()
    assert model.vocab_size == case.vocab_size, f"model.vocab_size={model.vocab_size}, expected {case.vocab_size}"
    ctx = model.context_length
    assert ctx is None or (isinstance(ctx, int) and ctx >= SEQ), (
        f"context_length must be None (unbounded) or an int >= {SEQ} for these checks, got {ctx!r}")


def check_output_shape(case: ModelCase) -> None:
    model = case.build().eval()
    with torch.no_grad():
        logits = model(case.tokens())
    assert logits.shape == (BATCH, SEQ, case.vocab_size), (
        f"logits have shape {tuple(logits.shape)}, expected (B, T, V) = {(BATCH, SEQ, case.vocab_size)}")
    assert logits.dtype.is_floating_point, f"logits must be floating point, got {logits.dtype}"
    assert torch.isfinite(logits).all(), "logits contain NaN or inf at initialisation"


def check_causality(case: ModelCase) -> None:
    """Changing the token at position t must leave logits at positions < t untouched
    (and, for a model that reads its input at all, change the logits at t)."""
    model = case.build().eval()
    idx = case.tokens()
    with torch.no_grad():
        base = model(idx)
        for t in range(SEQ):
            changed = idx.clone()
            changed[:, t] = (changed[:, t] + 1) % case.vocab_size
            out = model(changed)
            torch.testing.assert_close(out[:, :t], base[:, :t], rtol=1e-4, atol=1e-5,
                                       msg=lambda m: f"logits before position {t} depend on token {t}: {m}")
            assert not torch.allclose(out[:, t], base[:, t]), f"logits at position {t} ignore token {t}"


def check_context_length(case: ModelCase) -> None:
    model = case.build().eval()
    ctx = model.context_length
    with torch.no_grad():
        if ctx is None:  # unbounded: any length must work
            assert model(case.tokens(1, 4 * SEQ)).shape == (1, 4 * SEQ, case.vocab_size)
            return
        assert model(case.tokens(1, ctx)).shape == (1, ctx, case.vocab_size), "input of context_length failed"
        try:
            model(case.tokens(1, ctx + 1))
        except ValueError:
            return
        raise AssertionError(f"an input longer than context_length={ctx} must raise ValueError")


def check_parameter_counts(case: ModelCase) -> None:
    model = case.build()
    counts = model.parameter_counts()
    total, non_embedding = counts["total"], counts["non_embedding"]
    unique = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    assert total == unique, f"parameter_counts()['total']={total}, but unique parameters sum to {unique}"
    assert total >= non_embedding > 0, f"need total >= non_embedding > 0, got {counts}"


def check_flops_per_token(case: ModelCase) -> None:
    model = case.build()
    flops = model.flops_per_token(SEQ)
    assert isinstance(flops, int) and not isinstance(flops, bool), f"flops_per_token must be an int, got {flops!r}"
    assert flops > 0, f"flops_per_token({SEQ}) = {flops}, must be positive"
    assert model.flops_per_token(2 * SEQ) >= flops, "flops_per_token must not shrink with a longer sequence"
    if "n_layer" in case.hparams:
        deeper = case.build(n_layer=case.hparams["n_layer"] + 1).flops_per_token(SEQ)
        assert deeper > flops, f"flops_per_token must grow with n_layer: {flops} -> {deeper}"


def check_backward(case: ModelCase) -> None:
    model = case.build().train()
    idx = case.tokens()
    loss = F.cross_entropy(model(idx).flatten(0, 1), idx.roll(-1, dims=1).flatten())
    loss.backward()
    for name, param in model.named_parameters():
        if param.requires_grad:
            assert param.grad is not None, f"parameter {name} received no gradient"
            assert torch.isfinite(param.grad).all(), f"gradient of {name} is not finite"
    assert any(p.grad.abs().sum() > 0 for p in model.parameters() if p.grad is not None), "all gradients are zero"


def check_deterministic(case: ModelCase) -> None:
    a, b = case.build(seed=123), case.build(seed=123)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), f"{name} differs between two builds under torch.manual_seed(123)"
    idx = case.tokens()
    with torch.no_grad():
        assert torch.equal(a.eval()(idx), b.eval()(idx)), "same weights and input gave different logits"


def check_n_layer_override(case: ModelCase) -> None:
    if "n_layer" not in case.hparams:
        return  # not a layered model
    one, two = case.build(n_layer=1), case.build(n_layer=2)
    n1, n2 = one.parameter_counts()["total"], two.parameter_counts()["total"]
    assert n2 > n1, f"n_layer=2 should have more parameters than n_layer=1, got {n2} <= {n1}"
    with torch.no_grad():
        assert two.eval()(case.tokens()).shape == (BATCH, SEQ, case.vocab_size)


def check_hidden_head(case: ModelCase) -> None:
    """A model exposing ``hidden`` and ``head`` (optional) must give ``head(hidden(idx)) == forward(idx)``,
    position by position: the head applied to a subset of positions gives those positions' logits."""
    model = case.build().eval()
    parts = split(model)
    if parts is None:
        return  # optional: the harness falls back to forward
    hidden, head = parts
    idx = case.tokens()
    with torch.no_grad():
        logits, h = model(idx), hidden(idx)
        assert h.dim() == 3 and h.shape[:2] == idx.shape, f"hidden(idx) must be (B, T, C), got {tuple(h.shape)}"
        torch.testing.assert_close(head(h), logits, rtol=1e-5, atol=1e-6,
                                   msg=lambda m: f"head(hidden(idx)) differs from forward(idx): {m}")
        torch.testing.assert_close(head(h[:, -3:]), logits[:, -3:], rtol=1e-5, atol=1e-6,
                                   msg=lambda m: f"head on a slice of positions differs: {m}")


MODEL_CHECKS: list[Callable[[ModelCase], None]] = [
    check_attributes, check_output_shape, check_causality, check_context_length,
    check_parameter_counts, check_flops_per_token, check_backward, check_deterministic,
    check_n_layer_override, check_hidden_head,
]


def _case(component: Component, vocab_size: int, overrides: dict[str, Any]) -> ModelCase:
    unknown = sorted(set(overrides) - set(component.defaults))
    if unknown:
        raise ValueError(f"{component.name} has no hyperparameters {unknown}; "
                         f"known: {sorted(component.defaults)}")
    return ModelCase(component, vocab_size, {**component.defaults, **overrides})


def iter_model_checks(component: Component, vocab_size: int = 61,
                      **overrides: Any) -> Iterator[tuple[str, Callable[[], None]]]:
    """Yield ``(check_name, check)`` pairs; ``check()`` runs one check on this component."""
    case = _case(component, vocab_size, overrides)
    for check in MODEL_CHECKS:
        yield check.__name__, functools.partial(check, case)


def check_model(component: Component, vocab_size: int = 61, **overrides: Any) -> None:
    """Run every model check; ``overrides`` replace ``component.defaults`` (use small sizes)."""
    for _, check in iter_model_checks(component, vocab_size, **overrides):
        check()


def check_optimizer(component: Component, **overrides: Any) -> None:
    """Build the optimizer on a tiny ``nn.Linear``, take a step, round-trip its state_dict.

    The learning rate is ``defaults["lr"]`` when the component declares one, else 1e-3.
    """
    hparams = {**component.defaults, **overrides}
    lr = hparams.pop("lr", 1e-3)

    def setup() -> tuple[nn.Module, torch.optim.Optimizer]:
        torch.manual_seed(0)
        model = nn.Linear(8, 4)
        opt = component.factory(model.parameters(), lr=lr, device_type="cpu", **hparams)
        assert isinstance(opt, torch.optim.Optimizer), f"factory returned {type(opt).__name__}"
        return model, opt

    def step(model: nn.Module, opt: torch.optim.Optimizer) -> None:
        x = torch.randn(16, 8, generator=torch.Generator().manual_seed(1))
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()

    model, opt = setup()
    before = copy.deepcopy(model.state_dict())
    step(model, opt)
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items()), (
        f"{component.name}: parameters did not change after one step at lr={lr}")

    # A fresh optimizer loaded from the state_dict must continue exactly like the original.
    clone, clone_opt = setup()
    clone.load_state_dict(model.state_dict())
    clone_opt.load_state_dict(copy.deepcopy(opt.state_dict()))
    step(model, opt)
    step(clone, clone_opt)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(clone.state_dict()[k], v, rtol=0, atol=0,
                                   msg=lambda m: f"{component.name}: state_dict round-trip diverged: {m}")
