"""max_checkpoint_mb: a configuration whose weights exceed the limit fails at resolve time."""

import io

import pytest
import torch

from bench.cells import resolve_config, weights_bytes
from bench.cli import main
from bench.errors import ConfigError
from bench.registry import build_registry, plugin_manager

TINY = {"model": "gpt1", "optimizer": "adam", "dataset": "synthetic", "vocab_size": 64, "n_embd": 32,
        "n_layer": 2, "n_head": 2, "n_positions": 32, "seq_len": 16}


@pytest.fixture(scope="module")
def registry():
    return build_registry(plugin_manager())


def build(registry, model):
    component = registry.get("model", model)
    sizes = {"n_embd": 32, "n_hidden": 32, "n_layer": 2, "n_head": 2, "n_positions": 32}
    chosen = {k: v for k, v in sizes.items() if k in component.defaults}
    return component.build({**component.defaults, **chosen}, 64)


@pytest.mark.parametrize("model", ["gpt1", "lstm"])
def test_weights_bytes_is_what_best_pt_takes(registry, model):
    built = build(registry, model)
    buffer = io.BytesIO()
    torch.save(built.state_dict(), buffer)
    assert weights_bytes(built) <= buffer.tell() <= weights_bytes(built) + 64 * 1024  # + pickle framing


def test_limit_rejects_at_resolve_time(registry):
    config = resolve_config(TINY, registry, "w")
    size_mb = weights_bytes(build(registry, "gpt1")) / 1e6
    assert resolve_config({**TINY, "max_checkpoint_mb": size_mb * 1.01}, registry, "w")["max_checkpoint_mb"]
    with pytest.raises(ConfigError, match="over max_checkpoint_mb"):
        resolve_config({**TINY, "max_checkpoint_mb": size_mb * 0.99}, registry, "w")
    assert config["max_checkpoint_mb"] == 0


def test_cli_one_line_nothing_written(write_matrix, tmp_path, capsys):
    body = "\n".join(f"{k} = {v!r}".replace("'", '"') for k, v in TINY.items())
    path = write_matrix(f"[defaults]\n{body}\nmax_checkpoint_mb = 0.01\n")
    assert main(["run", str(path), "--outputs", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "over max_checkpoint_mb = 0.01" in err
    assert not (tmp_path / "out").exists()
