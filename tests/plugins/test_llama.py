"""The llama model: the conformance kit, and its logits against Hugging Face's LlamaForCausalLM
built offline from a LlamaConfig with the same weights."""

from __future__ import annotations

import json

import pytest
import torch

from bench.param_roles import parameter_roles
from bench.testing import parametrize_with_checks
from bench_plugins import models as models_plugin
from bench_plugins.models import llama

LLAMA = {c.name: c for c in models_plugin.bench_models()}["llama"]
SMALL = dict(n_layer=2, n_embd=32, n_head=4, n_positions=16, dropout=0.1)


def build(vocab_size: int = 37, **hparams) -> torch.nn.Module:
    return LLAMA.factory(vocab_size, **{**LLAMA.defaults, **SMALL, "dropout": 0.0, **hparams})


@parametrize_with_checks(models=[
    ("llama", LLAMA, {**SMALL, "vocab_size": 37}),
    ("llama-gqa-tied", LLAMA, {**SMALL, "n_kv_head": 2, "tie_weights": True, "vocab_size": 37}),
    ("llama-mqa-ffn", LLAMA, {**SMALL, "n_kv_head": 1, "n_ffn": 40, "rope_theta": 500000.0, "vocab_size": 37}),
])
def test_contract(check):
    check()


def reference(model: torch.nn.Module, *, tie: bool, n_kv_head: int, rope_theta: float = 10000.0):
    """``transformers``' LlamaForCausalLM of the same shape holding ``model``'s weights (no download)."""
    transformers = pytest.importorskip("transformers")
    d, n_head = model.n_embd, model.blocks[0].attn.n_head
    n_ffn = model.blocks[0].mlp.c_proj.in_features
    config = transformers.LlamaConfig(
        vocab_size=model.vocab_size, hidden_size=d, intermediate_size=n_ffn, num_hidden_layers=model.n_layer,
        num_attention_heads=n_head, num_key_value_heads=n_kv_head, max_position_embeddings=model.context_length,
        rms_norm_eps=llama.NORM_EPS, rope_parameters={"rope_type": "default", "rope_theta": rope_theta},
        tie_word_embeddings=tie, attention_bias=False, mlp_bias=False, hidden_act="silu", attention_dropout=0.0)
    config._attn_implementation = "eager"
    ref = transformers.LlamaForCausalLM(config).eval()
    kv = d // n_head * n_kv_head
    weights = {"model.embed_tokens.weight": model.wte.weight, "model.norm.weight": model.ln_f.weight,
               "lm_head.weight": model.lm_head.weight}
    for i, block in enumerate(model.blocks):
        q, k, v = block.attn.c_attn.weight.split([d, kv, kv])
        gate, up = block.mlp.c_fc.weight.chunk(2)
        layer = f"model.layers.{i}."
        weights.update({
            layer + "input_layernorm.weight": block.ln_1.weight, layer + "post_attention_layernorm.weight":
            block.ln_2.weight, layer + "self_attn.q_proj.weight": q, layer + "self_attn.k_proj.weight": k,
            layer + "self_attn.v_proj.weight": v, layer + "self_attn.o_proj.weight": block.attn.c_proj.weight,
            layer + "mlp.gate_proj.weight": gate, layer + "mlp.up_proj.weight": up,
            layer + "mlp.down_proj.weight": block.mlp.c_proj.weight})
    expected = set(ref.state_dict())
    assert set(weights) == expected, sorted(set(weights) ^ expected)  # every reference weight is set, none left
    with torch.no_grad():
        for name, param in ref.state_dict().items():
            param.copy_(weights[name])
    return ref


@pytest.mark.parametrize("tie, n_kv_head, rope_theta", [(False, 4, 10000.0), (True, 2, 10000.0), (False, 1, 5e5)])
def test_logits_equal_transformers_llama_with_the_same_weights(tie, n_kv_head, rope_theta):
    torch.manual_seed(0)
    model = build(tie_weights=tie, n_kv_head=n_kv_head, rope_theta=rope_theta).eval()
    with torch.no_grad():  # norms start at 1: perturb them so their weights are tested too
        for name, p in model.named_parameters():
            if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
                p.add_(0.1 * torch.randn_like(p))
    ref = reference(model, tie=tie, n_kv_head=n_kv_head, rope_theta=rope_theta)
    idx = torch.randint(0, 37, (3, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, theirs = model(idx), ref(idx).logits
    assert ours.shape == theirs.shape == (3, 16, 37)
    assert (ours - theirs).abs().max().item() < 1e-5


def test_parameter_count_formula_and_roles():
    d, V, L, d_kv, n_ffn = 32, 37, 2, 16, 96  # n_ffn: 8/3 * 32 rounded up to 32
    model = build(n_kv_head=2)
    assert model.blocks[0].mlp.c_proj.in_features == n_ffn
    assert model.parameter_counts()["total"] == 2 * V * d + L * (2 * d * d + 2 * d * d_kv + 3 * d * n_ffn + 2 * d) + d
    assert model.flops_per_token(8) == 6 * (L * (2 * d * d + 2 * d * d_kv + 3 * d * n_ffn) + V * d) + 6 * L * 8 * d
    roles = parameter_roles(model)
    assert not any("bias" in name for name in roles)  # no biases anywhere
    assert {roles[n] for n in roles if "ln_" in n} == {"norm"}
    assert "wpe.weight" not in roles  # RoPE: no position table


@pytest.mark.parametrize("hparams, key", [
    ({"n_kv_head": 3}, "n_kv_head"),
    ({"n_ffn": -1}, "n_ffn"),
    ({"rope_theta": 0.0}, "rope_theta"),
    ({"n_embd": 20, "n_head": 4}, "must be even"),
    ({"n_head": 5}, "n_head"),
])
def test_impossible_hparams_raise_value_error_naming_the_key(hparams, key):
    with pytest.raises(ValueError, match=key):
        build(**hparams)


def test_a_tiny_llama_trains_through_bench_run(write_matrix, tmp_path):
    from bench import cli
    from tests.conftest import TINY_DEFAULTS

    matrix = write_matrix(TINY_DEFAULTS + """
    [matrix]
    model = ["llama"]
    optimizer = ["adamw"]
    lr = [3e-3]
    n_layer = [1]
    include = [{ model = "llama", optimizer = "schedulefree-adamw", n_layer = 1, n_kv_head = 1, tie_weights = true }]
    """, name="llama")
    assert cli.main(["run", str(matrix), "--device", "cpu", "--outputs", str(tmp_path / "out")]) == 0
    summaries = [json.loads(p.read_text()) for p in (tmp_path / "out" / "llama").glob("*/summary.json")]
    assert sorted(s["config"]["optimizer"] for s in summaries) == ["adamw", "schedulefree-adamw"]
    assert all(s["status"] == "ok" and s["best_val_ppl"] < 16 for s in summaries), summaries  # beat uniform
