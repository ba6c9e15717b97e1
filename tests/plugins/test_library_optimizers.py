"""The optimizers taken from pytorch-optimizer and schedulefree: registration with their sources,
the conformance kit on each, weight-decay exclusion and refused hyperparameters."""

from __future__ import annotations

import json
import re
from importlib.metadata import version

import pluggy
import pytest
import torch

from bench import hookspecs
from bench.param_roles import tag_parameter_roles
from bench.testing import parametrize_with_checks
from bench_plugins import library_optimizers, models

OPTIMIZERS = {c.name: c for c in library_optimizers.bench_optimizers()}
NAMES = ["lion", "signum", "soap", "shampoo", "kron", "ademamix", "mars", "schedulefree-adamw", "prodigy", "adam-mini",
         "adopt"]
EXCLUDE = ["bias", "norm", "embedding"]


def small_gpt() -> torch.nn.Module:
    gpt = {c.name: c for c in models.bench_models()}["gpt2-tiny"]
    model = gpt.factory(23, **{**gpt.defaults, "n_layer": 1, "n_embd": 16, "n_head": 2, "n_positions": 16,
                               "tie_weights": False})
    tag_parameter_roles(model)
    return model


def build(name: str, params, **hparams) -> torch.optim.Optimizer:
    settings = {**OPTIMIZERS[name].defaults, **hparams}
    lr = settings.pop("lr", 1e-3)
    return OPTIMIZERS[name].factory(params, lr=lr, device_type="cpu", **settings)


def test_registers_through_pluggy_with_library_version_and_paper():
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.register(library_optimizers)
    (components,) = pm.hook.bench_optimizers()
    assert [c.name for c in components] == NAMES
    libraries = {"pytorch-optimizer": version("pytorch-optimizer"), "schedulefree": version("schedulefree")}
    for component in components:
        source = re.search(r"\[(\S+) (\S+) (\w+); .+ \d{4}, arXiv:\d{4}\.\d{5}\]$", component.description)
        assert source, component.description
        assert libraries[source[1]] == source[2]  # the installed version, not a hard-coded one
        assert component.defaults["decay_exclude"] == []


# Small overrides reach the code paths the six kit steps would not: SOAP's eigenbasis refresh, AdEMAMix's
# alpha/beta3 warmup, MARS on 1-D parameters, Schedule-Free's warmup, Adam-mini's decay exclusion.
@parametrize_with_checks(optimizers=[
    *OPTIMIZERS.values(),
    ("soap-refresh-every-2", OPTIMIZERS["soap"], {"precondition_frequency": 2, "precondition_1d": True}),
    ("ademamix-warmup", OPTIMIZERS["ademamix"], {"t_alpha_beta3": 4}),
    ("mars-1d", OPTIMIZERS["mars"], {"optimize_1d": True}),
    ("shampoo-momentum", OPTIMIZERS["shampoo"], {"momentum": 0.9, "preconditioning_compute_steps": 2}),
    ("schedulefree-warmup", OPTIMIZERS["schedulefree-adamw"], {"schedulefree_warmup_steps": 2, "weight_decay": 0.01}),
    ("adam-mini-decay-exclude", OPTIMIZERS["adam-mini"], {"decay_exclude": EXCLUDE}),
    ("kron-balance-diag", OPTIMIZERS["kron"], {"balance_prob": 1.0, "memory_save_mode": "one_diag"}),
    ("kron-update-every-2", OPTIMIZERS["kron"], {"pre_conditioner_update_probability": 0.5}),
])
def test_contract(check):
    check()


@pytest.mark.parametrize("name", [n for n in NAMES if n != "prodigy"])  # see the next test
def test_decay_exclude_leaves_biases_norms_and_embeddings_undecayed(name):
    """With zero gradients only weight decay moves a parameter: excluded ones stay bitwise equal.
    Two steps: ADOPT and SOAP spend their first on initialising state."""
    model = small_gpt()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    roles = tag_parameter_roles(model)
    opt = build(name, model.parameters(), lr=0.1, weight_decay=0.5, decay_exclude=EXCLUDE,
                **({"weight_decay_1d": 0.5, "optimize_1d": True} if name == "mars" else {}))
    if hasattr(opt, "train"):
        opt.train()
    for _ in range(2):
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        opt.step()
    for n, p in model.named_parameters():
        if roles[n] in EXCLUDE:
            assert torch.equal(p, before[n]), f"{n} ({roles[n]}) was decayed"
        else:
            assert not torch.equal(p, before[n]), f"{n} ({roles[n]}) was not decayed"


def test_prodigy_decay_exclude_puts_excluded_roles_in_an_undecayed_group():
    # Prodigy skips the whole step (decay included) while every gradient is zero, so the test above
    # cannot see its decay; the groups are what decay_exclude sets.
    model = small_gpt()
    roles = tag_parameter_roles(model)
    opt = build("prodigy", model.parameters(), weight_decay=0.5, decay_exclude=EXCLUDE)
    by_id = {id(p): roles[n] for n, p in model.named_parameters()}
    for group in opt.param_groups:
        group_roles = {by_id[id(p)] for p in group["params"]}
        assert group_roles <= set(EXCLUDE) if group["weight_decay"] == 0 else not group_roles & set(EXCLUDE)
    assert len(opt.param_groups) == 2


def test_kron_draws_from_its_own_streams_and_leaves_the_global_ones_alone():
    import numpy as np

    model = small_gpt()
    torch.manual_seed(5)
    opt = build("kron", model.parameters(), balance_prob=1.0)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    torch_before, numpy_before = torch.get_rng_state(), np.random.get_state()[1].copy()
    own_before = opt.param_groups[0]["bench_rng"]["torch"].clone()
    opt.step()
    assert torch.equal(torch.get_rng_state(), torch_before)  # the global generators are untouched
    assert (np.random.get_state()[1] == numpy_before).all()
    assert not torch.equal(opt.param_groups[0]["bench_rng"]["torch"], own_before)  # its own stream moved


def test_adam_mini_keeps_per_entry_moments_for_embedding_and_head_and_one_per_other_tensor():
    model = small_gpt()
    opt = build("adam-mini", model.parameters())
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    opt.step()
    roles = tag_parameter_roles(model)
    for n, p in model.named_parameters():
        state = opt.state[p]
        if roles[n] in ("embedding", "head"):
            assert state["v"].shape == p.shape, n
        else:
            assert state["v_mean"].numel() == 1, n


@pytest.mark.parametrize("name, hparams, key", [
    ("lion", {"betas": [0.9, 1.5]}, "beta2"),
    ("ademamix", {"betas": [0.9, 0.999]}, "betas"),
    ("ademamix", {"ademamix_alpha": -1.0}, "ademamix_alpha"),
    ("soap", {"precondition_frequency": 0}, "precondition_frequency"),
    ("mars", {"mars_type": "sgd"}, "mars_type"),
    ("prodigy", {"d0": 0.0}, "d0"),
    ("schedulefree-adamw", {"schedulefree_warmup_steps": -1}, "schedulefree_warmup_steps"),
    ("adam-mini", {"decay_exclude": ["biases"]}, "decay_exclude"),
    ("signum", {"momentum": 1.0}, "momentum"),
    ("shampoo", {"matrix_eps": 0.0}, "matrix_eps"),
    ("kron", {"memory_save_mode": "diag"}, "memory_save_mode"),
    ("kron", {"pre_conditioner_update_probability": 2.0}, "pre_conditioner_update_probability"),
])
def test_impossible_hparams_raise_value_error_naming_the_key(name, hparams, key):
    with pytest.raises(ValueError, match=key):
        build(name, small_gpt().parameters(), **hparams)


def test_schedulefree_round_trip_gives_the_training_weights_back_bitwise():
    model = small_gpt()
    opt = build("schedulefree-adamw", model.parameters())
    opt.train()
    for _ in range(3):
        for p in model.parameters():
            p.grad = torch.randn_like(p)
        opt.step()
    training = [p.detach().clone() for p in model.parameters()]
    opt.eval()
    assert any(not torch.equal(p, t) for p, t in zip(model.parameters(), training))  # x, not y
    opt.train()
    assert all(torch.equal(p, t) for p, t in zip(model.parameters(), training))
    assert all("y" not in opt.state[p] for p in model.parameters())  # the copy lives only in eval mode


def test_library_optimizers_train_in_a_matrix(write_matrix, tmp_path):
    from bench import cli
    from tests.conftest import TINY_DEFAULTS

    matrix = write_matrix(TINY_DEFAULTS + """
    [matrix]
    model = ["gpt1"]
    optimizer = ["soap", "schedulefree-adamw", "prodigy"]
    include = [{ model = "gpt1", optimizer = "adam-mini", lr = 3e-3 },
               { model = "gpt1", optimizer = "lion", lr = 1e-3 }]
    schedule = ["constant"]
    """, name="library")
    assert cli.main(["run", str(matrix), "--device", "cpu", "--outputs", str(tmp_path / "out")]) == 0
    summaries = [json.loads(p.read_text()) for p in (tmp_path / "out" / "library").glob("*/summary.json")]
    assert sorted(s["config"]["optimizer"] for s in summaries) == ["adam-mini", "lion", "prodigy", "schedulefree-adamw",
                                                                    "soap"]
    assert all(s["status"] == "ok" and s["best_val_ppl"] < 16 for s in summaries), summaries  # beat uniform
