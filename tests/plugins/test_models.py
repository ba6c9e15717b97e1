"""The built-in models against bench.testing's contract, plus model-specific facts."""

from __future__ import annotations

import pluggy
import pytest
import torch
from torch import nn

from bench import hookspecs
from bench.components import Component
from bench.lm import LanguageModel
from bench.testing import check_model, iter_model_checks, parametrize_with_checks
from bench_plugins import models as models_plugin

MODELS = {c.name: c for c in models_plugin.bench_models()}

# Small but non-trivial: two layers (so depth-dependent code runs), dropout on (so the
# checks must put the model in eval mode), widths that differ where they may.
SMALL = {
    "lstm": dict(n_layer=2, n_embd=16, n_hidden=24, dropout=0.1),
    "gpt1": dict(n_layer=2, n_embd=32, n_head=4, n_positions=16, dropout=0.1),
    "gpt2-tiny": dict(n_layer=2, n_embd=32, n_head=4, n_positions=16, dropout=0.1),
}
# Variants that flip the boolean switches.
VARIANTS = {
    "lstm-tied": ("lstm", dict(n_layer=1, n_embd=16, n_hidden=16, tie_weights=True)),
    "gpt1-untied": ("gpt1", dict(SMALL["gpt1"], tie_weights=False)),
    "gpt2-tiny-untied-nobias": ("gpt2-tiny", dict(SMALL["gpt2-tiny"], tie_weights=False, bias=False)),
}
CONFIGS = {**{name: (name, hp) for name, hp in SMALL.items()}, **VARIANTS}



def build(name: str, vocab_size: int = 37, **hparams) -> LanguageModel:
    return MODELS[name].factory(vocab_size, **{**MODELS[name].defaults, **hparams})


def test_plugin_registers_three_models_through_pluggy():
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.register(models_plugin)
    (components,) = pm.hook.bench_models()
    assert [c.name for c in components] == ["lstm", "gpt1", "gpt2-tiny"]
    assert all(c.description for c in components)


@parametrize_with_checks(models=[(config, MODELS[model], {**hparams, "vocab_size": 37})
                                 for config, (model, hparams) in CONFIGS.items()])
def test_contract(check):
    check()


def test_check_model_accepts_small_overrides():
    check_model(MODELS["gpt2-tiny"], vocab_size=11, n_layer=1, n_embd=16, n_head=2, n_positions=8)


def test_gpt2_tiny_default_parameter_count():
    V, P, d, L = 50257, 1024, 384, 6
    with torch.device("meta"):  # shapes only: no 30M-parameter allocation
        model = build("gpt2-tiny", vocab_size=V)
    # token + position tables, per block 12 d^2 weights + 9 d biases + 4 d LayerNorm, final LN
    expected = V * d + P * d + L * (12 * d * d + 13 * d) + 2 * d
    counts = model.parameter_counts()
    assert counts["total"] == expected == 30_339_456
    assert counts["non_embedding"] == expected - V * d - P * d
    assert 29e6 < counts["total"] < 31e6


def test_transformer_flops_formula_counts_every_matmul_weight():
    for name in ("gpt1", "gpt2-tiny"):
        model = build(name, n_layer=3, n_embd=32, n_head=4, n_positions=64)
        V, d, L, T = 37, 32, 3, 64
        # The head is counted although tied: the lookup is free, the output matmul is not.
        linear_weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
        assert linear_weights == 12 * L * d * d + V * d
        assert model.flops_per_token(T) == 6 * linear_weights + 6 * L * T * d


def test_lstm_flops_formula():
    model = build("lstm", n_layer=2, n_embd=16, n_hidden=24)
    lstm_weights = 4 * 24 * (16 + 24) + 4 * 24 * (24 + 24)
    assert model.flops_per_token(8) == model.flops_per_token(512) == 6 * (lstm_weights + 37 * 24)


def test_non_embedding_excludes_only_token_and_position_tables():
    tied = build("gpt1", n_layer=2, n_embd=32, n_head=4, n_positions=16)
    untied = build("gpt1", n_layer=2, n_embd=32, n_head=4, n_positions=16, tie_weights=False)
    assert tied.lm_head.weight is tied.wte.weight
    assert untied.parameter_counts()["total"] - tied.parameter_counts()["total"] == 37 * 32
    # An untied head is a matmul, so it counts as non-embedding.
    assert untied.parameter_counts()["non_embedding"] - tied.parameter_counts()["non_embedding"] == 37 * 32
    lstm = build("lstm", n_embd=16, n_hidden=16, tie_weights=True)
    assert lstm.parameter_counts()["non_embedding"] == lstm.parameter_counts()["total"] - 37 * 16


def test_gpt2_scales_residual_projections_at_init():
    model = build("gpt2-tiny", n_layer=8, n_embd=128, n_head=4, n_positions=16)
    block = model.blocks[0]
    assert block.mlp.c_fc.weight.std().item() == pytest.approx(0.02, rel=0.05)
    for proj in (block.attn.c_proj, block.mlp.c_proj):
        assert proj.weight.std().item() == pytest.approx(0.02 / 4, rel=0.05)  # 1/sqrt(2 * 8)
        assert torch.count_nonzero(proj.bias) == 0


def test_gpt1_is_post_ln_and_gpt2_is_pre_ln():
    # GPT-1's blocks end with a LayerNorm, so each block's output is normalised per position;
    # GPT-2's residual stream is a raw sum, normalised only by ln_f before the head.
    idx = torch.randint(0, 37, (2, 8))
    outputs = {}
    for name in ("gpt1", "gpt2-tiny"):
        model = build(name, n_layer=2, n_embd=32, n_head=4, n_positions=16).eval()
        model.blocks[-1].register_forward_hook(lambda m, i, o, name=name: outputs.__setitem__(name, o))
        with torch.no_grad():
            model(idx)
    std = lambda x: x.std(dim=-1, unbiased=False)  # noqa: E731
    torch.testing.assert_close(std(outputs["gpt1"]), torch.ones(2, 8), atol=1e-3, rtol=0)
    assert (std(outputs["gpt2-tiny"]) - 1).abs().max() > 0.1


@pytest.mark.parametrize("name, hparams, key", [
    ("gpt1", dict(n_embd=30, n_head=4), "n_head"),
    ("gpt2-tiny", dict(n_embd=384, n_head=5), "n_head"),
    ("gpt2-tiny", dict(n_layer=0), "n_layer"),
    ("gpt1", dict(n_positions=0), "n_positions"),
    ("gpt2-tiny", dict(dropout=1.0), "dropout"),
    ("lstm", dict(n_embd=16, n_hidden=24, tie_weights=True), "tie_weights"),
    ("lstm", dict(n_layer=0), "n_layer"),
])
def test_impossible_hparams_raise_value_error_naming_the_key(name, hparams, key):
    with pytest.raises(ValueError, match=key):
        build(name, **hparams)


@pytest.mark.parametrize("name", ["gpt1", "gpt2-tiny"])
def test_sequence_longer_than_n_positions_raises(name):
    model = build(name, n_layer=1, n_embd=16, n_head=2, n_positions=8)
    model(torch.zeros(1, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="n_positions=8"):
        model(torch.zeros(1, 9, dtype=torch.long))


def test_check_model_rejects_unknown_override():
    with pytest.raises(ValueError, match="n_hidden"):
        check_model(MODELS["gpt1"], n_hidden=3)


class _Leaky(LanguageModel):
    """Sees the future: position t's logits depend on the mean of the whole sequence."""

    def __init__(self, vocab_size: int, n_embd: int = 8):
        super().__init__()
        self.vocab_size, self.emb = vocab_size, nn.Embedding(vocab_size, n_embd)
        self.head = nn.Linear(n_embd, vocab_size)

    def forward(self, idx):
        x = self.emb(idx)
        return self.head(x + x.mean(dim=1, keepdim=True))

    def flops_per_token(self, seq_len):
        return 6 * self.head.weight.numel()


def test_causality_check_catches_a_model_that_sees_the_future():
    checks = iter_model_checks(Component("leaky", _Leaky, {"n_embd": 8}))
    checks["check_output_shape"]()
    for mode in ("eval", "train"):
        with pytest.raises(AssertionError, match=f"in {mode} mode, logits at positions < 1 change"):
            checks[f"check_causality_{mode}"]()
