"""Model checks: ``factory(vocab_size, **hparams) -> bench.lm.LanguageModel``. Everything runs on CPU."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
from torch.nn import functional as F

from bench.components import Component
from bench.lm import LanguageModel, prefix_reader, split
from bench.testing.kit import KindChecks, require

BATCH, SEQ = 2, 8
VOCAB = 61
# The longest input the long causality checks read: the model's context_length when shorter. A leak
# that appears only at later positions (a position-dependent branch, a cache that kicks in past some
# length) shows here; one that appears only beyond this length is out of the kit's reach.
MAX_CAUSAL_SEQ = 64
TRAIN_STEPS = 8  # Adam steps before check_causality_after_training looks again
CAUSAL_ROWS = 16  # split points per forward pass (bounds memory at long lengths)


@dataclass
class ModelCase:
    """What every model check receives: the component, the vocabulary and the hyperparameters."""

    component: Component
    vocab_size: int
    hparams: dict[str, Any] = field(default_factory=dict)

    def build(self, seed: int = 0, **extra: Any) -> LanguageModel:
        torch.manual_seed(seed)
        model = self.component.factory(self.vocab_size, **{**self.hparams, **extra})
        require(isinstance(model, LanguageModel),
                f"factory returned {type(model).__name__}, not a bench.lm.LanguageModel")
        return model

    def tokens(self, batch: int = BATCH, seq: int = SEQ, seed: int = 1) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return torch.randint(0, self.vocab_size, (batch, seq), generator=g)


def make_case(component: Component, overrides: Mapping[str, Any]) -> ModelCase:
    overrides = dict(overrides)
    vocab_size = int(overrides.pop("vocab_size", VOCAB))
    return ModelCase(component, vocab_size, {**component.defaults, **overrides})


def check_attributes(case: ModelCase) -> None:
    model = case.build()
    require(model.vocab_size == case.vocab_size,
            f"model.vocab_size={model.vocab_size}, expected the factory's vocab_size={case.vocab_size}")
    ctx = model.context_length
    require(ctx is None or (isinstance(ctx, int) and ctx >= SEQ),
            f"context_length must be None (unbounded) or an int >= {SEQ} for these checks, got {ctx!r}")


def check_output_shape(case: ModelCase) -> None:
    model = case.build().eval()
    with torch.no_grad():
        logits = model(case.tokens())
    require(logits.shape == (BATCH, SEQ, case.vocab_size),
            f"logits have shape {tuple(logits.shape)}, expected (B, T, V) = {(BATCH, SEQ, case.vocab_size)}")
    require(logits.dtype.is_floating_point, f"logits must be floating point, got {logits.dtype}")
    require(torch.isfinite(logits).all(), "logits contain NaN or inf at initialisation")


def _causality(case: ModelCase, train: bool) -> None:
    """Changing the token at position t must leave logits at positions < t untouched (and, for a
    model that reads its input at all, change the logits at t). In train mode every forward pass
    starts from the same RNG seed, so dropout masks agree between the two inputs."""
    mode = "train" if train else "eval"
    model = case.build().train(train)
    idx = case.tokens()

    def forward(x: torch.Tensor) -> torch.Tensor:
        torch.manual_seed(7)
        return model(x)

    with torch.no_grad():
        base = forward(idx)
        for t in range(SEQ):
            changed = idx.clone()
            changed[:, t] = (changed[:, t] + 1) % case.vocab_size
            out = forward(changed)
            if t:
                leak = (out[:, :t] - base[:, :t]).abs().max().item()
                require(leak <= 1e-5 + 1e-4 * base[:, :t].abs().max().item(),
                        f"in {mode} mode, logits at positions < {t} change (by up to {leak:.3g}) when only the "
                        f"token at position {t} changes: the model sees the future; position t may use "
                        "tokens <= t only")
            require(not torch.allclose(out[:, t], base[:, t]),
                    f"in {mode} mode, logits at position {t} ignore the token at position {t}")


def causal_length(model: LanguageModel) -> int:
    """The length the long causality checks use: the model's context, at most ``MAX_CAUSAL_SEQ``."""
    ctx = model.context_length
    return MAX_CAUSAL_SEQ if ctx is None else min(ctx, MAX_CAUSAL_SEQ)


def _causality_at_length(model: LanguageModel, vocab_size: int, length: int, train: bool, when: str) -> None:
    """For every split point t in 1..length-1: replacing every token at positions >= t must leave
    the logits at positions < t untouched. Split points are batched as rows (row r: t = r + 1), and
    the changed batch runs from the same RNG seed as the unchanged one, so dropout masks agree."""
    mode = "train" if train else "eval"
    model.train(train)
    idx = torch.randint(0, vocab_size, (1, length), generator=torch.Generator().manual_seed(5))
    positions = torch.arange(length)
    with torch.no_grad():
        for first in range(1, length, CAUSAL_ROWS):
            splits = torch.arange(first, min(first + CAUSAL_ROWS, length))
            base = idx.expand(len(splits), length)
            future = positions[None, :] >= splits[:, None]
            changed = torch.where(future, (base + 1) % vocab_size, base)
            torch.manual_seed(7)
            before = model(base)
            torch.manual_seed(7)
            after = model(changed)
            moved = (after - before).abs().amax(dim=-1).masked_fill(future, 0.0)  # (rows, length)
            tolerance = 1e-5 + 1e-4 * before.abs().max().item()
            leaking = (moved > tolerance).any(dim=1).nonzero()
            if len(leaking):  # name the earliest split point that leaks, and its worst position
                row = int(leaking[0])
                pos, by = int(moved[row].argmax()), moved[row].max().item()
                t = int(splits[row])
                require(False, f"in {mode} mode {when}, on a length-{length} input, the logits at position {pos} "
                               f"change (by {by:.3g}) when only the tokens at positions >= {t} "
                               "change: the model sees the future; position t may use tokens <= t only")


def check_causality_eval(case: ModelCase) -> None:
    _causality(case, train=False)
    model = case.build()
    _causality_at_length(model, case.vocab_size, causal_length(model), train=False, when="at initialisation")


def check_causality_train(case: ModelCase) -> None:
    _causality(case, train=True)
    model = case.build()
    _causality_at_length(model, case.vocab_size, causal_length(model), train=True, when="at initialisation")


def check_causality_after_training(case: ModelCase) -> None:
    """Causality again after ``TRAIN_STEPS`` Adam steps on next-token prediction: a path that is
    zero at initialisation (a zero-initialised projection of the next token, a gate that starts
    closed) passes the checks at initialisation, and training opens it."""
    model = case.build().train()
    length = causal_length(model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(11)
    for _ in range(TRAIN_STEPS):
        seq = torch.randint(0, case.vocab_size, (BATCH, length + 1), generator=g)
        loss = F.cross_entropy(model(seq[:, :-1]).flatten(0, 1), seq[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    when = f"after {TRAIN_STEPS} Adam steps"
    _causality_at_length(model, case.vocab_size, length, train=False, when=when)
    _causality_at_length(model, case.vocab_size, length, train=True, when=when)


def check_context_length(case: ModelCase) -> None:
    model = case.build().eval()
    ctx = model.context_length
    with torch.no_grad():
        if ctx is None:  # unbounded: any length must work
            out = model(case.tokens(1, 4 * SEQ))
            require(out.shape == (1, 4 * SEQ, case.vocab_size),
                    f"context_length is None (unbounded) but a length-{4 * SEQ} input gave {tuple(out.shape)}")
            return
        require(model(case.tokens(1, ctx)).shape == (1, ctx, case.vocab_size),
                f"an input of exactly context_length={ctx} tokens did not give (1, {ctx}, V) logits")
        try:
            model(case.tokens(1, ctx + 1))
        except ValueError:
            return
        require(False, f"an input longer than context_length={ctx} must raise ValueError")


def check_parameter_counts(case: ModelCase) -> None:
    model = case.build()
    counts = model.parameter_counts()
    total, non_embedding = counts["total"], counts["non_embedding"]
    unique = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    require(total == unique, f"parameter_counts()['total']={total}, but unique parameters sum to {unique}")
    require(total >= non_embedding > 0, f"need total >= non_embedding > 0, got {counts}")


def check_flops_per_token(case: ModelCase) -> None:
    model = case.build()
    flops = model.flops_per_token(SEQ)
    require(isinstance(flops, int) and not isinstance(flops, bool), f"flops_per_token must be an int, got {flops!r}")
    require(flops > 0, f"flops_per_token({SEQ}) = {flops}, must be positive")
    require(model.flops_per_token(2 * SEQ) >= flops, "flops_per_token must not shrink with a longer sequence")
    if "n_layer" in case.hparams:
        deeper = case.build(n_layer=case.hparams["n_layer"] + 1).flops_per_token(SEQ)
        require(deeper > flops, f"flops_per_token must grow with n_layer: {flops} -> {deeper}")


def check_backward(case: ModelCase) -> None:
    model = case.build().train()
    idx = case.tokens()
    loss = F.cross_entropy(model(idx).flatten(0, 1), idx.roll(-1, dims=1).flatten())
    loss.backward()
    for name, param in model.named_parameters():
        if param.requires_grad:
            grad = param.grad
            require(grad is not None, f"parameter {name} received no gradient from the loss")
            require(grad is None or torch.isfinite(grad).all(), f"gradient of {name} is not finite")
    require(any(p.grad.abs().sum() > 0 for p in model.parameters() if p.grad is not None), "all gradients are zero")


def check_learns(case: ModelCase) -> None:
    """Thirty Adam steps on one fixed batch must lower its loss: the model can fit anything at all."""
    model = case.build().train()
    idx = case.tokens()
    target = idx.roll(-1, dims=1).flatten()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        torch.manual_seed(3)
        loss = F.cross_entropy(model(idx).flatten(0, 1), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    require(losses[-1] < 0.9 * losses[0],
            f"30 Adam steps (lr 1e-2) on one batch took the loss from {losses[0]:.3f} only to {losses[-1]:.3f}")


def check_deterministic(case: ModelCase) -> None:
    a, b = case.build(seed=123), case.build(seed=123)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        require(torch.equal(pa, pb), f"{name} differs between two builds under torch.manual_seed(123)")
    idx = case.tokens()
    with torch.no_grad():
        require(torch.equal(a.eval()(idx), b.eval()(idx)), "same weights and input gave different logits")


def check_n_layer_override(case: ModelCase) -> None:
    if "n_layer" not in case.hparams:
        return  # not a layered model
    one, two = case.build(n_layer=1), case.build(n_layer=2)
    n1, n2 = one.parameter_counts()["total"], two.parameter_counts()["total"]
    require(n2 > n1, f"n_layer=2 should have more parameters than n_layer=1, got {n2} <= {n1}")
    with torch.no_grad():
        require(two.eval()(case.tokens()).shape == (BATCH, SEQ, case.vocab_size), "n_layer=2 gave wrong logits shape")


def check_hidden_head(case: ModelCase) -> None:
    """Optional split: a model exposing ``hidden`` and ``head`` must give ``head(hidden(idx)) ==
    forward(idx)``, also on a subset of positions (the harness runs the head only where it scores)."""
    model = case.build().eval()
    parts = split(model)
    if parts is None:
        return  # optional: the harness falls back to forward
    hidden, head = parts
    idx = case.tokens()
    with torch.no_grad():
        logits, h = model(idx), hidden(idx)
        require(h.dim() == 3 and h.shape[:2] == idx.shape, f"hidden(idx) must be (B, T, C), got {tuple(h.shape)}")
        require(torch.allclose(head(h), logits, rtol=1e-5, atol=1e-6), "head(hidden(idx)) differs from forward(idx)")
        require(torch.allclose(head(h[:, -3:]), logits[:, -3:], rtol=1e-5, atol=1e-6),
                "head applied to a slice of positions differs from those positions' logits")


def check_hidden_after(case: ModelCase) -> None:
    """Optional prefix sharing: ``hidden_after(prefix, suffixes)`` must equal ``hidden`` of each
    suffix row read after the prefix (HellaSwag scores an item's endings after one context this way)."""
    model = case.build().eval()
    reader, parts = prefix_reader(model), split(model)
    if reader is None or parts is None:
        return  # optional: the harness then reads the context once per ending
    hidden_after, hidden = reader[0], parts[0]
    idx = case.tokens()
    prefix, suffixes = idx[:1, :SEQ // 2], idx[:, SEQ // 2:]
    with torch.no_grad():
        shared = hidden_after(prefix, suffixes)
        whole = hidden(torch.cat([prefix.expand(len(suffixes), -1), suffixes], 1))[:, prefix.size(1):]
    require(shared.shape == whole.shape, f"hidden_after must give (N, S, C) = {tuple(whole.shape)}, "
            f"got {tuple(shared.shape)}")
    require(torch.allclose(shared, whole, rtol=1e-4, atol=1e-5),
            "hidden_after(prefix, suffixes) differs from hidden of the prefix and each suffix read together "
            f"(max difference {(shared - whole).abs().max().item():.2e})")


KIND = KindChecks("model", (
    check_attributes, check_output_shape, check_causality_eval, check_causality_train, check_causality_after_training,
    check_context_length,
    check_parameter_counts, check_flops_per_token, check_backward, check_learns, check_deterministic,
    check_n_layer_override, check_hidden_head, check_hidden_after,
), make_case)
