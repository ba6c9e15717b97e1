import math

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from bench.errors import ConfigError
from bench.sweep.space import parse_param, parse_space


def test_kinds_map_to_optuna_distributions():
    space = parse_space({"lr": {"loguniform": [1e-4, 1e-1]}, "wd": {"uniform": [0, 0.1]},
                         "n_layer": {"int": [1, 4]}, "n_embd": {"intlog": [16, 256], "step": 1},
                         "model": {"choice": ["lstm", "gpt1"]}}, "m.toml")
    assert space["lr"].distribution() == FloatDistribution(1e-4, 1e-1, log=True)
    assert space["wd"].distribution() == FloatDistribution(0.0, 0.1)
    assert space["n_layer"].distribution() == IntDistribution(1, 4)
    assert space["n_embd"].distribution() == IntDistribution(16, 256, log=True)
    assert space["model"].distribution() == CategoricalDistribution(("lstm", "gpt1"))


def test_grid_values():
    assert parse_param("n", {"int": [1, 7], "step": 3}, "w").grid() == [1, 4, 7]
    lr = parse_param("lr", {"loguniform": [1e-4, 1e-2], "points": 3}, "w").grid()
    assert [round(math.log10(v), 9) for v in lr] == [-4, -3, -2]
    assert parse_param("x", {"uniform": [0, 1], "points": 3}, "w").grid() == [0.0, 0.5, 1.0]
    assert parse_param("m", {"choice": ["a", "b"]}, "w").grid() == ["a", "b"]


@pytest.mark.parametrize("spec, message", [
    ({"loguniform": [0, 1]}, "bounds > 0"),
    ({"intlog": [-1, 4]}, "bounds > 0"),
    ({"uniform": [1, 1]}, "is empty"),
    ({"int": [4, 2]}, "is empty"),
    ({"choice": []}, "non-empty list"),
    ({"uniform": [0]}, r"\[low, high\]"),
    ({"int": [0.5, 2]}, "two integers"),
    ({"normal": [0, 1]}, "exactly one of"),
    ({"uniform": [0, 1], "choice": [1]}, "exactly one of"),
    ({"uniform": [0, 1], "points": 0}, "points must be an integer >= 1"),
    (3, "must be a table"),
])
def test_bad_ranges_are_one_clear_error(spec, message):
    with pytest.raises(ConfigError, match=message):
        parse_param("lr", spec, "m.toml: sweep.space.lr")


def test_empty_space():
    with pytest.raises(ConfigError, match="non-empty table"):
        parse_space({}, "m.toml")
