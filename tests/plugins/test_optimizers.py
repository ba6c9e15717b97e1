"""The built-in optimizers against the kit, Muon's parameter split and weight-decay exclusion."""

from __future__ import annotations

import json

import pluggy
import pytest
import torch

from bench import hookspecs
from bench.param_roles import tag_parameter_roles
from bench.testing import parametrize_with_checks
from bench_plugins import models, optimizers

OPTIMIZERS = {c.name: c for c in optimizers.bench_optimizers()}
EXCLUDE = ["bias", "norm", "embedding"]


def small_gpt(**extra) -> torch.nn.Module:
    gpt = {c.name: c for c in models.bench_models()}["gpt2-tiny"]
    hparams = {**gpt.defaults, "n_layer": 2, "n_embd": 16, "n_head": 2, "n_positions": 16, **extra}
    model = gpt.factory(23, **hparams)
    tag_parameter_roles(model)
    return model


def build(name: str, params, lr: float = 1e-2, **hparams) -> torch.optim.Optimizer:
    return OPTIMIZERS[name].factory(params, lr=lr, device_type="cpu", **{**OPTIMIZERS[name].defaults, **hparams})


def test_registers_eight_optimizers_through_pluggy():
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.register(optimizers)
    (components,) = pm.hook.bench_optimizers()
    assert [c.name for c in components] == ["sgd", "momentum", "adam", "adamw", "nadam", "radam", "adafactor", "muon"]
    assert all(c.description for c in components)
    assert all(c.defaults["decay_exclude"] == [] for c in components)  # off by default


@parametrize_with_checks(optimizers=[*OPTIMIZERS.values(),
                                     ("adamw-decay-exclude", OPTIMIZERS["adamw"], {"decay_exclude": EXCLUDE}),
                                     ("muon-original-lr", OPTIMIZERS["muon"], {"adjust_lr_fn": "original"})])
def test_contract(check):
    check()


def test_muon_takes_hidden_matrices_and_adamw_the_rest():
    model = small_gpt(tie_weights=False)
    opt = build("muon", model.parameters())
    muon_part, adamw_part = opt.parts
    assert isinstance(muon_part, torch.optim.Muon) and isinstance(adamw_part, torch.optim.AdamW)
    names = {id(p): n for n, p in model.named_parameters()}
    in_muon = sorted(names[id(p)] for g in muon_part.param_groups for p in g["params"])
    in_adamw = {names[id(p)] for g in adamw_part.param_groups for p in g["params"]}
    expected = sorted(f"blocks.{i}.{layer}.weight" for i in range(2)
                      for layer in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"))
    assert in_muon == expected
    assert {"wte.weight", "wpe.weight", "lm_head.weight", "ln_f.weight", "ln_f.bias",
            "blocks.0.attn.c_attn.bias"} <= in_adamw
    assert len(in_muon) + len(in_adamw) == len(names)
    # One optimizer for the trainer: its groups are the inner optimizers' own group dicts.
    opt.param_groups[0]["lr"] = 0.5
    assert muon_part.param_groups[0]["lr"] == 0.5


def test_muon_needs_parameter_roles():
    with pytest.raises(ValueError, match="tag_parameter_roles"):
        build("muon", torch.nn.Linear(4, 4).parameters())


@pytest.mark.parametrize("name", ["sgd", "momentum", "adam", "adamw", "nadam", "radam", "adafactor", "muon"])
def test_decay_exclude_leaves_biases_norms_and_embeddings_undecayed(name):
    """With zero gradients only weight decay moves a parameter: excluded ones stay bitwise equal."""
    model = small_gpt(tie_weights=False)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    roles = tag_parameter_roles(model)
    opt = build(name, model.parameters(), lr=0.1, weight_decay=0.5, decay_exclude=EXCLUDE,
                **({"decoupled_weight_decay": True} if name in ("nadam", "radam") else {}))
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for n, p in model.named_parameters():
        if roles[n] in EXCLUDE:
            assert torch.equal(p, before[n]), f"{n} ({roles[n]}) was decayed"
        else:
            assert not torch.equal(p, before[n]), f"{n} ({roles[n]}) was not decayed"
    assert {roles[n] for n in roles} >= {"bias", "norm", "embedding", "head", "matrix"}


def test_decay_exclude_off_keeps_one_param_group():
    model = small_gpt()
    assert len(build("adamw", model.parameters()).param_groups) == 1


@pytest.mark.parametrize("name, hparams, key", [
    ("adamw", {"decay_exclude": ["biases"]}, "decay_exclude"),
    ("adafactor", {"beta2_decay": 0.5}, "beta2_decay"),
    ("nadam", {"momentum_decay": -1.0}, "momentum_decay"),
    ("radam", {"betas": [0.9]}, "betas"),
    ("muon", {"adjust_lr_fn": "rms"}, "adjust_lr_fn"),
    ("muon", {"momentum": 1.5}, "momentum"),
])
def test_impossible_hparams_raise_value_error_naming_the_key(name, hparams, key):
    with pytest.raises(ValueError, match=key):
        build(name, small_gpt().parameters(), **hparams)


def test_decay_exclude_needs_roles():
    with pytest.raises(ValueError, match="decay_exclude needs to know"):
        build("adamw", torch.nn.Linear(4, 4).parameters(), decay_exclude=["bias"])


def test_muon_and_decay_exclude_train_in_a_matrix(write_matrix, tmp_path):
    from bench import cli
    from tests.conftest import TINY_DEFAULTS

    matrix = write_matrix(TINY_DEFAULTS + """
    [matrix]
    model = ["gpt1", "lstm"]
    optimizer = ["muon"]
    lr = [3e-3]
    include = [{ model = "gpt1", optimizer = "adamw", decay_exclude = ["bias", "norm", "embedding"] }]
    """, name="modern")
    assert cli.main(["run", str(matrix), "--device", "cpu", "--outputs", str(tmp_path / "out")]) == 0
    summaries = [json.loads(p.read_text()) for p in (tmp_path / "out" / "modern").glob("*/summary.json")]
    runs = sorted((s["config"]["model"], s["config"]["optimizer"], s["config"]["decay_exclude"]) for s in summaries)
    assert runs == [("gpt1", "adamw", ["bias", "norm", "embedding"]), ("gpt1", "muon", []), ("lstm", "muon", [])]
    assert all(s["status"] == "ok" and s["best_val_ppl"] < 16 for s in summaries), summaries  # beat uniform
