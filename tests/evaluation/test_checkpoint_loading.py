"""Rebuilding a finished cell from its folder: the same model, the best weights, its tokenizer."""

from __future__ import annotations

import shutil

import pytest
import torch

from bench.errors import BenchError
from bench.evaluation.checkpoint_loading import NotTextCell, load_cell
from bench.registry import build_registry, plugin_manager
from bench.store import BEST_WEIGHTS


@pytest.fixture(scope="module")
def registry():
    return build_registry(plugin_manager())


def test_loads_the_best_weights_and_the_tokenizer(trained, registry):
    loaded = load_cell(trained["text"], registry, torch.device("cpu"))
    assert loaded.cell["config"]["model"] == "gpt2-tiny" and loaded.tokenizer.name == "byte"
    assert not loaded.model.training
    saved = torch.load(trained["text"] / BEST_WEIGHTS, weights_only=True)
    for name, tensor in loaded.model.state_dict().items():
        assert torch.equal(tensor, saved[name]), name


def test_a_token_cell_is_not_text(trained, registry):
    with pytest.raises(NotTextCell, match="token ids of dataset 'synthetic'"):
        load_cell(trained["tokens"], registry, torch.device("cpu"))


def test_missing_or_foreign_weights_are_clear_errors(trained, registry, tmp_path):
    cell = shutil.copytree(trained["text"], tmp_path / "cell")
    (cell / BEST_WEIGHTS).unlink()
    with pytest.raises(BenchError, match="did not finish"):
        load_cell(cell, registry, torch.device("cpu"))
    torch.save({"wte.weight": torch.zeros(3, 3)}, cell / BEST_WEIGHTS)
    with pytest.raises(BenchError, match="does not fit model 'gpt2-tiny'"):
        load_cell(cell, registry, torch.device("cpu"))
    with pytest.raises(BenchError, match="not a cell folder"):
        load_cell(tmp_path, registry, torch.device("cpu"))
