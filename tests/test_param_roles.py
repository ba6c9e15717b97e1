from bench.param_roles import parameter_roles, role_of, tag_parameter_roles
from bench_plugins import models

MODELS = {c.name: c for c in models.bench_models()}


def build(name, **hparams):
    return MODELS[name].factory(23, **{**MODELS[name].defaults, **hparams})


def test_gpt_roles():
    roles = parameter_roles(build("gpt2-tiny", n_layer=1, n_embd=16, n_head=2, n_positions=8, tie_weights=False))
    assert roles["wte.weight"] == roles["wpe.weight"] == "embedding"
    assert roles["lm_head.weight"] == "head"
    assert roles["ln_f.weight"] == roles["ln_f.bias"] == roles["blocks.0.ln_1.weight"] == "norm"
    assert roles["blocks.0.attn.c_attn.bias"] == "bias"
    assert roles["blocks.0.mlp.c_fc.weight"] == "matrix"


def test_tied_head_is_the_embedding_and_listed_once():
    model = build("gpt1", n_layer=1, n_embd=16, n_head=2, n_positions=8)
    roles = parameter_roles(model)
    assert "lm_head.weight" not in roles and roles["wte.weight"] == "embedding"
    assert list(roles) == [name for name, _ in model.named_parameters()]


def test_lstm_roles_and_tags():
    model = build("lstm", n_layer=1, n_embd=8, n_hidden=8)
    roles = tag_parameter_roles(model)
    assert {roles[n] for n in roles if "bias" in n} == {"bias"}
    assert {roles[n] for n in roles if "weight_hh" in n} == {"matrix"}
    assert all(role_of(p) == roles[n] for n, p in model.named_parameters())
