import pytest

from bench.cells import cell_id, resolve_cells, resolve_config
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
    assert cell_id(base) == cell_id({**base, "checkpoint_every": 50, "memory_interval_ms": 10})
    assert cell_id(base) != cell_id({**base, "lr": base["lr"] * 2})


def test_cells_get_stable_ids_and_readable_names():
    raw = {"defaults": {"dataset": "synthetic"}, "seeds": [0, 1],
           "matrix": {"model": ["lstm", "gpt1"], "optimizer": ["sgd"], "n_layer": [1, 2]}}
    cells = resolve_cells(parse_matrix(raw, default_name="m", where="m"), REGISTRY)
    again = resolve_cells(parse_matrix(raw, default_name="m", where="m"), REGISTRY)
    assert len(cells) == 8 == len({c.id for c in cells})
    assert [c.id for c in cells] == [c.id for c in again]
    assert "gpt1-L2-sgd-seed1" in {c.name for c in cells}
