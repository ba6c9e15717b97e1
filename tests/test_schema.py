"""The reliability keys of the matrix schema are checked, for every cell, before anything trains."""

from __future__ import annotations

import pytest

from bench import cli
from bench.cells import resolve_cells
from bench.errors import ConfigError
from bench.matrix import parse_matrix
from bench.registry import build_registry, plugin_manager

REGISTRY = build_registry(plugin_manager())
BASE = {"model": "lstm", "optimizer": "sgd", "n_embd": 8, "n_hidden": 8}


def _cells(*variants: dict):
    raw = {"defaults": BASE, "matrix": {"include": list(variants)}}
    return resolve_cells(parse_matrix(raw, default_name="m", where="m.toml"), REGISTRY)


def test_defaults_checkpoint_at_epoch_ends_with_no_divergence_limit_and_no_retry():
    (cell,) = _cells({"seed": 0})
    assert (cell.config["checkpoint"], cell.config["checkpoint_every"]) == (True, 0)
    assert (cell.config["divergence_factor"], cell.config["oom_retry"]) == (0.0, False)


@pytest.mark.parametrize("bad, message", [
    ({"checkpoint_evry": 10}, "unknown key 'checkpoint_evry'; did you mean 'checkpoint_every'?"),
    ({"checkpoint_every": -5}, "checkpoint_every = -5 is impossible; it must be >= 0"),
    ({"checkpoint_every": 2.5}, "checkpoint_every must be an integer"),
    ({"checkpoint": "yes"}, "checkpoint must be a boolean"),
    ({"divergence_factor": 0.5}, "divergence_factor = 0.5 is impossible; it must be 0 (off) or > 1"),
    ({"divergence_factor": "x"}, "divergence_factor must be a number"),
    ({"oom_retry": 1}, "oom_retry must be a boolean"),
    ({"oom_retry": True, "batch_size": 7}, "batch_size must be even"),
])
def test_impossible_values_are_rejected_naming_the_cell(bad, message):
    # The bad value sits in the third cell only: validation covers every cell, not the first.
    with pytest.raises(ConfigError, match="cell 3") as raised:
        _cells({"seed": 0}, {"seed": 1}, {"seed": 2, **bad})
    assert message in str(raised.value)


def test_a_bad_late_cell_stops_the_run_before_any_training(write_matrix, tmp_path, capsys):
    path = write_matrix("""
        [defaults]
        model = "lstm"
        optimizer = "sgd"
        [matrix]
        include = [{ lr = 0.1 }, { lr = 0.2 }, { lr = 0.3, divergence_factor = 1.0 }]
        """)
    assert cli.main(["run", str(path), "--device", "cpu", "--outputs", str(tmp_path / "outputs")]) == 2
    assert "divergence_factor = 1.0 is impossible" in capsys.readouterr().err
    assert not (tmp_path / "outputs").exists()
