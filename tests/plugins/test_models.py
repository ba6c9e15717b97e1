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


def test_plugin_registers_four_models_through_pluggy():
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.register(models_plugin)
    (components,) = pm.hook.bench_models()
    assert [c.name for c in components] == ["lstm", "gpt1", "gpt2-tiny", "llama"]
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


# Logits of the models as built before gpt1 and gpt2-tiny shared one skeleton (seed 0, the
# configuration below): same seed, same weights, same logits, so checkpoints and results carry over.
GOLDEN = {
    "gpt1": (1.5432119332253933, 57.882531446754, [0.053920671343803406, 0.023616870865225792, -0.06791815906763077]),
    "gpt2-tiny": (1.587405678344112, 57.486088985758215,
                  [0.06082870438694954, 0.01738329418003559, -0.03623521700501442]),
    "lstm": (17.67411784781143, 66.28273740084842, [0.27758514881134033, -0.05851349979639053, 0.10552234947681427]),
}
GOLDEN_HPARAMS = {
    "gpt1": dict(n_layer=2, n_embd=32, n_head=4, n_positions=16),
    "gpt2-tiny": dict(n_layer=2, n_embd=32, n_head=4, n_positions=16),
    "lstm": dict(n_layer=2, n_embd=16, n_hidden=24),
}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_seeded_models_give_the_same_logits_as_before(name):
    torch.manual_seed(0)
    model = build(name, **GOLDEN_HPARAMS[name]).eval()
    idx = torch.randint(0, 37, (2, 8), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(idx).double()
    total, absolute, last = GOLDEN[name]
    assert logits.sum().item() == pytest.approx(total, abs=1e-9)
    assert logits.abs().sum().item() == pytest.approx(absolute, abs=1e-9)
    assert logits[1, -1, :3].tolist() == pytest.approx(last, abs=1e-9)


def _reference_logits(state: dict[str, torch.Tensor], idx: torch.Tensor, *, n_head: int, pre_ln: bool) -> torch.Tensor:
    """The GPT forward written out from the papers, with plain functional ops on a state_dict:
    GPT-2 (nanoGPT's model) is pre-LN with a final LayerNorm, GPT-1 post-LN without one."""
    F = torch.nn.functional
    T = idx.size(1)
    ln = lambda x, p: F.layer_norm(x, x.shape[-1:], state.get(f"{p}.weight"), state.get(f"{p}.bias"))  # noqa: E731
    lin = lambda x, p: F.linear(x, state[f"{p}.weight"], state.get(f"{p}.bias"))  # noqa: E731

    def attn(x, p):
        B, T, C = x.shape
        q, k, v = lin(x, f"{p}.c_attn").split(C, dim=2)
        q, k, v = (t.view(B, T, n_head, C // n_head).transpose(1, 2) for t in (q, k, v))
        scores = (q @ k.transpose(-2, -1)) / (C // n_head) ** 0.5
        scores = scores.masked_fill(torch.ones(T, T).triu(1).bool(), float("-inf"))
        y = (scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(B, T, C)
        return lin(y, f"{p}.c_proj")

    def mlp(x, p):
        return lin(F.gelu(lin(x, f"{p}.c_fc")), f"{p}.c_proj")

    x = state["wte.weight"][idx] + state["wpe.weight"][:T]
    layers = sorted({int(k.split(".")[1]) for k in state if k.startswith("blocks.")})
    for i in layers:
        p = f"blocks.{i}"
        if pre_ln:
            x = x + attn(ln(x, f"{p}.ln_1"), f"{p}.attn")
            x = x + mlp(ln(x, f"{p}.ln_2"), f"{p}.mlp")
        else:
            x = ln(x + attn(x, f"{p}.attn"), f"{p}.ln_1")
            x = ln(x + mlp(x, f"{p}.mlp"), f"{p}.ln_2")
    if pre_ln:
        x = ln(x, "ln_f")
    return x @ state["lm_head.weight"].T


@pytest.mark.parametrize("name, pre_ln, hparams", [
    ("gpt2-tiny", True, dict(tie_weights=True, bias=True)),
    ("gpt2-tiny", True, dict(tie_weights=False, bias=False)),
    ("gpt1", False, dict(tie_weights=True)),
])
def test_gpt_logits_equal_a_functional_reference(name, pre_ln, hparams):
    model = build(name, n_layer=2, n_embd=32, n_head=4, n_positions=16, **hparams).eval()
    idx = torch.randint(0, 37, (3, 11), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = _reference_logits(model.state_dict(), idx, n_head=4, pre_ln=pre_ln)
        torch.testing.assert_close(model(idx), expected, rtol=1e-5, atol=1e-5)


def test_gpt1_and_gpt2_share_one_skeleton_and_keep_their_parameter_names():
    gpt1 = build("gpt1", n_layer=1, n_embd=16, n_head=2, n_positions=8)
    gpt2 = build("gpt2-tiny", n_layer=1, n_embd=16, n_head=2, n_positions=8)
    assert type(gpt1) is type(gpt2)
    assert not any(k.startswith("ln_f") for k in gpt1.state_dict())  # post-LN: no final LayerNorm
    assert {"wte.weight", "wpe.weight", "lm_head.weight", "ln_f.weight"} <= set(gpt2.state_dict())
