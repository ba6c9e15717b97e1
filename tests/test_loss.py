"""Chunked loss = full-logits loss, in value and in every gradient (float32, 1e-6)."""

from __future__ import annotations

import weakref

import pytest
import torch
from torch import nn

from bench.lm import LanguageModel
from bench.loss import lm_loss
from bench_plugins import models

VOCAB = 97
SMALL = {
    "gpt1": {"n_layer": 2, "n_embd": 32, "n_head": 4, "n_positions": 16, "dropout": 0.0},
    "gpt2-tiny": {"n_layer": 2, "n_embd": 32, "n_head": 4, "n_positions": 16, "dropout": 0.0},
    "gpt2-tiny-untied": {"n_layer": 1, "n_embd": 16, "n_head": 2, "n_positions": 16, "dropout": 0.0,
                         "tie_weights": False, "bias": False},
    "lstm": {"n_layer": 2, "n_embd": 16, "n_hidden": 24, "dropout": 0.0},
}


def build(config: str) -> LanguageModel:
    component = {c.name: c for c in models.bench_models()}[config.replace("-untied", "")]
    torch.manual_seed(0)
    return component.factory(VOCAB, **{**component.defaults, **SMALL[config]})


def batch(seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, VOCAB, (3, 13), generator=g)
    return tokens[:, :-1], tokens[:, 1:]


def loss_and_grads(model: nn.Module, chunk: int, reduction: str = "mean"):
    model.zero_grad(set_to_none=True)
    x, y = batch()
    loss = lm_loss(model, x, y, chunk=chunk, reduction=reduction)
    (3.0 * loss).backward()  # a scale in front, as accumulation and GradScaler put one
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("config", sorted(SMALL))
@pytest.mark.parametrize("chunk", [1, 5, 7, 36, 1000])  # 36 = B*T exactly; 5 and 7 leave a short last chunk
def test_chunked_loss_and_gradients_equal_the_full_logits(config, chunk):
    model = build(config)
    full_loss, full_grads = loss_and_grads(model, chunk=0)
    loss, grads = loss_and_grads(model, chunk=chunk)
    torch.testing.assert_close(loss, full_loss, rtol=1e-6, atol=1e-6)
    assert grads.keys() == full_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, full_grads[name], rtol=1e-6, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")


def test_sum_reduction_and_no_grad_evaluation_match():
    model = build("gpt2-tiny").eval()
    x, y = batch()
    with torch.no_grad():
        full = lm_loss(model, x, y, reduction="sum")
        chunked = lm_loss(model, x, y, chunk=5, reduction="sum")
    torch.testing.assert_close(chunked, full, rtol=1e-6, atol=1e-6)
    assert full == pytest.approx(lm_loss(model, x, y).item() * y.numel(), rel=1e-6)


def test_ignored_targets_are_not_scored_in_either_path():
    model = build("gpt2-tiny")
    x, y = batch()
    y = y.clone()
    y[:, :4] = -100  # e.g. the context part of a sliding evaluation window
    model.zero_grad(set_to_none=True)
    full = lm_loss(model, x, y)
    full.backward()
    full_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    chunked = lm_loss(model, x, y, chunk=5)
    chunked.backward()
    torch.testing.assert_close(chunked, full, rtol=1e-6, atol=1e-6)
    for grad, expected in zip((p.grad for p in model.parameters()), full_grads):
        torch.testing.assert_close(grad, expected, rtol=1e-6, atol=1e-6)
    kept = y != -100
    with torch.no_grad():
        direct = torch.nn.functional.cross_entropy(model(x)[kept], y[kept], reduction="sum")
        torch.testing.assert_close(lm_loss(model, x, y, chunk=7, reduction="sum"), direct, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("chunk", [0, 5])
def test_logits_do_not_outlive_the_loss(chunk):
    model = build("gpt2-tiny")
    x, y = batch()
    refs = []
    model.lm_head.register_forward_hook(lambda m, i, out: refs.append(weakref.ref(out)))
    loss = lm_loss(model, x, y, chunk=chunk)
    assert refs and all(ref() is None for ref in refs), "logits outlived lm_loss"
    loss.backward()
    assert refs and all(ref() is None for ref in refs), "the (B, T, V) logits outlived the loss computation"


class NoSplit(LanguageModel):
    """A third-party style model with forward only: chunking falls back to the full logits."""

    def __init__(self):
        super().__init__()
        self.vocab_size = VOCAB
        self.emb = nn.Embedding(VOCAB, 8)
        self.out = nn.Linear(8, VOCAB)

    def forward(self, idx):
        return self.out(self.emb(idx))


def test_model_without_hidden_and_head_falls_back_to_forward():
    torch.manual_seed(0)
    model = NoSplit()
    full_loss, full_grads = loss_and_grads(model, chunk=0)
    loss, grads = loss_and_grads(model, chunk=4)
    assert torch.equal(loss, full_loss)
    assert all(torch.equal(grads[n], full_grads[n]) for n in grads)


def test_rejects_an_unknown_reduction():
    with pytest.raises(ValueError, match="reduction"):
        lm_loss(build("lstm"), *batch(), reduction="none")


@pytest.mark.parametrize("model", ["gpt2-tiny", "lstm"])
def test_a_cell_trained_with_loss_chunk_follows_the_full_logits_run(tmp_path, model):
    from tests.test_training_sanity import SMALL_MODEL, train

    settings = dict(model=model, optimizer="adamw", dataset="synthetic", vocab_size=64, train_tokens=4000,
                    valid_tokens=700, test_tokens=700, seq_len=16, batch_size=8, max_steps=12,
                    steps_per_epoch=6, log_every=3, **SMALL_MODEL)
    full, full_record = train(tmp_path / "full", **settings)
    chunked, record = train(tmp_path / "chunked", **settings, loss_chunk=10)  # 128 positions: 13 chunks
    def curve(r):
        rows = r.read_metrics()
        return [row[key] for row in rows for key in ("train_loss", "val_loss") if key in row]

    assert len(curve(record)) == len(curve(full_record)) >= 8
    assert curve(record) == pytest.approx(curve(full_record), rel=1e-5)
    assert chunked["test_loss"] == pytest.approx(full["test_loss"], rel=1e-5)
