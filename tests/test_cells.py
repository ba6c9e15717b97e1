import pytest
import torch

from bench.cells import cell_id, resolve_cells, resolve_config, unused_key_warnings
from bench.errors import ConfigError
from bench.matrix import parse_matrix
from bench.registry import build_registry, plugin_manager

REGISTRY = build_registry(plugin_manager())


def resolve(**user):
    return resolve_config({"model": "lstm", "optimizer": "adamw", **user}, REGISTRY, "test")


def test_keys_route_to_the_components_that_declare_them():
    config = resolve(n_hidden=32, momentum=0.5, decay_steps=10)
    assert config["n_hidden"] == 32
    # momentum and decay_steps belong to components this cell does not use
    assert "momentum" not in config and "decay_steps" not in config
    assert config["weight_decay"] == 0.01 and config["tokenizer"] is None


def test_unknown_key_suggests_the_closest():
    with pytest.raises(ConfigError, match="did you mean 'n_hidden'"):
        resolve(n_hiden=32)


def test_cell_id_ignores_keys_that_do_not_change_the_computation():
    base = resolve()
    operational = {"checkpoint_every": 50, "memory_interval_ms": 10, "checkpoint_async": True}
    assert cell_id(base) == cell_id({**base, **operational})
    assert cell_id(base) != cell_id({**base, "lr": base["lr"] * 2})


def test_cells_get_stable_ids_and_readable_names():
    raw = {"defaults": {"dataset": "synthetic"}, "seeds": [0, 1],
           "matrix": {"model": ["lstm", "gpt1"], "optimizer": ["sgd"], "n_layer": [1, 2]}}
    cells = resolve_cells(parse_matrix(raw, default_name="m", where="m"), REGISTRY)
    again = resolve_cells(parse_matrix(raw, default_name="m", where="m"), REGISTRY)
    assert len(cells) == 8 == len({c.id for c in cells})
    assert [c.id for c in cells] == [c.id for c in again]
    assert "gpt1-L2-sgd-seed1" in {c.name for c in cells}


def test_a_key_set_by_several_include_entries_appears_once_in_a_name():
    raw = {"defaults": {"dataset": "synthetic", "model": "lstm", "optimizer": "adam"},
           "matrix": {"lr": [0.001], "include": [{"lr": 0.001, "batch_size": 8}, {"lr": 0.01, "batch_size": 4},
                                                   {"lr": 0.1, "batch_size": 2}]}}
    names = [c.name for c in resolve_cells(parse_matrix(raw, default_name="m", where="m"), REGISTRY)]
    assert names == ["lstm-L1-adam-lr=0.001-batch_size=8", "lstm-L1-adam-lr=0.01-batch_size=4",
                     "lstm-L1-adam-lr=0.1-batch_size=2"]


FAULTY = '''
import torch
from torch import nn
from bench import Component, hookimpl

def exploding_model(vocab_size, n_embd):
    raise RuntimeError("cuda kernel not found")

class ParamsOnly(torch.optim.Optimizer):
    def __init__(self, params, lr):
        super().__init__(params, {"lr": lr})

    def step(self, closure=None):
        pass

@hookimpl
def bench_models():
    return [Component("exploding", exploding_model, {"n_embd": 8}),
            Component("linear", lambda vocab_size, n_embd: nn.Linear(n_embd, vocab_size), {"n_embd": 8})]

@hookimpl
def bench_optimizers():
    return [Component("dict-opt", lambda params, *, lr, device_type: {"lr": lr}),
            Component("slow-opt", lambda params, *, lr, device_type, momentum: ParamsOnly(params, lr),
                      {"lr": 1e-4, "momentum": 0.9}),
            Component("lion-like", lambda params, *, lr, device_type: ParamsOnly(params, lr), {"lr": 3e-4})]

@hookimpl
def bench_schedules():
    return [Component("warm", lambda *, lr, total_steps, warmup_steps: (lambda step: lr), {"warmup_steps": 5})]
'''


@pytest.fixture
def faulty(plugin_site):
    from tests.conftest import make_distribution
    make_distribution(plugin_site, "bench-faulty", "bench_faulty", FAULTY, version="2.1")
    return build_registry(plugin_manager())


def _cells(registry, matrix: dict):
    raw = {"defaults": {"dataset": "synthetic", "n_layer": 1}, "matrix": matrix}
    return resolve_cells(parse_matrix(raw, default_name="m", where="m"), registry)


def test_a_factory_exception_of_any_type_becomes_one_line_naming_plugin_and_cell(faulty):
    cells = _cells(faulty, {"model": ["exploding", "lstm"], "optimizer": ["sgd"]})
    assert [c.problem for c in cells][1] is None
    assert cells[0].problem == ("matrix 'm', cell 1 (model=exploding, optimizer=sgd): model 'exploding' from "
                                "bench-faulty 2.1 failed to build: RuntimeError: cuda kernel not found")
    with pytest.raises(ConfigError, match="bench-faulty 2.1 failed to build: RuntimeError"):
        resolve_config({"model": "exploding", "optimizer": "sgd"}, faulty, "test")


@pytest.mark.parametrize("kind, user, message", [
    ("model", {"model": "linear", "optimizer": "sgd"},
     "model 'linear' from bench-faulty 2.1 returned torch.nn.modules.linear.Linear, not a bench.LanguageModel"),
    ("optimizer", {"model": "lstm", "optimizer": "dict-opt"},
     "optimizer 'dict-opt' from bench-faulty 2.1 returned builtins.dict, not a torch.optim.Optimizer"),
])
def test_a_factory_returning_the_wrong_type_is_named_at_resolve_time(faulty, kind, user, message):
    (cell,) = _cells(faulty, {k: [v] for k, v in user.items()})
    assert message in cell.problem and "fix the plugin's factory" in cell.problem


def test_an_impossible_value_is_still_a_matrix_error(faulty):
    with pytest.raises(ConfigError, match="n_head"):
        _cells(faulty, {"model": ["gpt1"], "optimizer": ["sgd"], "n_head": [3], "n_embd": [16]})


def test_an_optimizer_declares_its_own_default_lr_which_the_matrix_overrides(faulty):
    own = resolve_config({"model": "lstm", "optimizer": "slow-opt"}, faulty, "test")
    assert own["lr"] == 1e-4 and own["momentum"] == 0.9
    assert resolve_config({"model": "lstm", "optimizer": "slow-opt", "lr": 0.05}, faulty, "test")["lr"] == 0.05
    assert resolve_config({"model": "lstm", "optimizer": "sgd"}, faulty, "test")["lr"] == 1e-3  # harness default
    component = faulty.get("optimizer", "slow-opt")
    built = component.build(own, [torch.nn.Parameter(torch.zeros(2))], lr=own["lr"], device_type="cpu")
    assert built.param_groups[0]["lr"] == 1e-4  # no "multiple values for keyword argument 'lr'"


def test_a_plugin_default_for_a_harness_key_and_its_own_keys_resolve_together(faulty):
    config = resolve_config({"model": "lstm", "optimizer": "lion-like", "schedule": "warm"}, faulty, "test")
    assert (config["lr"], config["warmup_steps"]) == (3e-4, 5)


def test_two_components_with_different_defaults_for_one_key_need_the_matrix_to_choose(plugin_site):
    from tests.conftest import make_distribution
    make_distribution(plugin_site, "bench-warm", "bench_warm", '''
from bench import Component, hookimpl

@hookimpl
def bench_optimizers():
    import torch
    return [Component("warm-sgd", lambda params, *, lr, device_type, warmup_steps: torch.optim.SGD(params, lr=lr),
                      {"warmup_steps": 7})]
''')
    registry = build_registry(plugin_manager())
    user = {"model": "lstm", "optimizer": "warm-sgd", "schedule": "cosine"}
    with pytest.raises(ConfigError, match="optimizer 'warm-sgd' and schedule 'cosine' both declare 'warmup_steps', "
                                          "with defaults 7 and 0; set warmup_steps in the matrix"):
        resolve_config(user, registry, "test")
    assert resolve_config({**user, "warmup_steps": 3}, registry, "test")["warmup_steps"] == 3


def test_cells_stored_before_later_keys_existed_keep_their_ids():
    # The quickstart's ids as bench 0.1.0 (before budgets, eval_stride, loss_chunk, decay_exclude, ...)
    # computed them: at their neutral values the later keys leave the identity alone, so a rerun
    # finds the finished results instead of training every cell again.
    from bench.matrix import load_matrix
    from tests.conftest import REPO

    cells = resolve_cells(load_matrix(str(REPO / "matrices" / "quickstart.toml")), build_registry(plugin_manager()))
    assert [c.id for c in cells] == [
        "68e8bb33713d", "36578007d7bd", "0e44765ae79a", "80efc5e0b5be", "b5406d0ab9c4", "549b4df8b122",
        "5a44480c3f52", "b54aa114e942", "2699cfccc5aa", "34503aed95d5", "441333eedde4", "a5e0667ef0a2"]
    assert cells[0].id == cell_id(cells[0].config)
    assert cells[0].id != cell_id({**cells[0].config, "eval_stride": 8})  # a non-neutral value is a new cell


def test_a_key_no_cell_uses_is_named_once_with_who_declares_it():
    # AdEMAMix's key on a matrix without AdEMAMix: dropped from every cell, so said out loud.
    raw = {"defaults": {"dataset": "synthetic", "model": "gpt1", "ademamix_alpha": 8.0, "momentum": 0.9},
           "matrix": {"optimizer": ["sgd", "momentum"]}}
    matrix = parse_matrix(raw, default_name="m", where="m")
    warnings = unused_key_warnings(matrix, resolve_cells(matrix, REGISTRY), REGISTRY)
    assert warnings == ["bench: warning: 'ademamix_alpha' is set in matrix 'm' but none of its cells uses it "
                        "(declared only by optimizer 'ademamix'); remove it, or use a component that reads it"]


def test_a_default_used_by_some_cells_of_a_grid_is_not_warned_about():
    raw = {"defaults": {"dataset": "synthetic", "model": "gpt1", "momentum": 0.9},
           "matrix": {"optimizer": ["adam", "momentum"]}}  # momentum: used by the momentum cell only
    matrix = parse_matrix(raw, default_name="m", where="m")
    assert unused_key_warnings(matrix, resolve_cells(matrix, REGISTRY), REGISTRY) == []
