"""Rebuilding a finished cell from its folder: the same model, the best weights, its tokenizer."""

from __future__ import annotations

import shutil

import pytest
import torch

from bench.errors import BenchError
from bench.evaluation.checkpoint_loading import NotTextCell, load_cell
from bench.registry import build_registry, plugin_manager
from bench.store import BEST_WEIGHTS, CellRecord


def _forget_recorded_files(cell) -> None:
    record = CellRecord(cell)
    summary = record.read_summary()
    summary["files"] = {}
    record.write_summary(summary)


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
    _forget_recorded_files(cell)  # as a cell written before summaries recorded their files
    with pytest.raises(BenchError, match="does not fit model 'gpt2-tiny'"):
        load_cell(cell, registry, torch.device("cpu"))
    with pytest.raises(BenchError, match="not a cell folder"):
        load_cell(tmp_path, registry, torch.device("cpu"))


# -- fault 2: a truncated best.pt is one clear line, not an OSError from torch -------------------

def test_a_truncated_best_pt_is_caught_by_its_recorded_fingerprint(trained, registry, tmp_path, capsys):
    cell = shutil.copytree(trained["text"], tmp_path / "cell")
    weights = cell / BEST_WEIGHTS
    size = weights.stat().st_size
    weights.write_bytes(weights.read_bytes()[:size // 2])
    with pytest.raises(BenchError) as caught:
        load_cell(cell, registry, torch.device("cpu"))
    assert str(caught.value) == (f"{weights} does not match summary.json ({size // 2} bytes, {size} recorded); "
                                 "rerun the cell with `bench run MATRIX` (it counts as unfinished now)")
    _forget_recorded_files(cell)  # written by an older bench: torch's own error, still one line
    with pytest.raises(BenchError, match=f"^{weights} cannot be loaded .*; rerun the cell with `bench run --force`$"):
        load_cell(cell, registry, torch.device("cpu"))


def test_a_damaged_config_is_one_clear_line(trained, registry, tmp_path, capsys):
    cell = shutil.copytree(trained["text"], tmp_path / "cell")
    (cell / "config.json").write_bytes(b'{"id": "\xff"}')
    with pytest.raises(BenchError, match="has no readable config.json"):
        load_cell(cell, registry, torch.device("cpu"))
    assert "config.json is not valid UTF-8" in capsys.readouterr().err
