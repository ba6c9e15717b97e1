"""Sanity checks every registered model must pass, plus determinism of a cell."""

from __future__ import annotations

import math

import pytest
import torch

from bench.cells import Cell, cell_id, resolve_config
from bench.registry import build_registry, plugin_manager
from bench.store import ResultStore
from bench.training import train_cell

MANAGER = plugin_manager()
REGISTRY = build_registry(MANAGER)
SMALL_MODEL = {"n_layer": 1, "n_embd": 32, "n_hidden": 32, "n_head": 2, "n_positions": 32}


class _Silent:
    """Hooks relay that drops lifecycle calls (the console logger is not under test here)."""

    def __getattr__(self, name):
        return lambda **kwargs: None


def train(tmp_path, **settings):
    config = resolve_config(settings, REGISTRY, "test")
    cell = Cell(cell_id(config), "test", config)
    store = ResultStore(tmp_path, "sanity")
    return train_cell(cell, REGISTRY, _Silent(), torch.device("cpu"), store.cell(cell.id)), store.cell(cell.id)


@pytest.mark.parametrize("model", REGISTRY.names("model"))
def test_model_cannot_beat_chance_on_unlearnable_tokens(tmp_path, model):
    # If held-out loss drops below ln k, the model is seeing the token it predicts.
    k = 8
    summary, _ = train(tmp_path, model=model, optimizer="adamw", lr=3e-3, dataset="random-tokens", k=k,
                       vocab_size=k, seq_len=32, batch_size=16, max_steps=300, steps_per_epoch=100,
                       **SMALL_MODEL)
    assert summary["best_val_loss"] >= math.log(k) - 0.02
    assert summary["test_loss"] >= math.log(k) - 0.02


@pytest.mark.parametrize("model", REGISTRY.names("model"))
def test_model_learns_a_learnable_sequence(tmp_path, model):
    summary, _ = train(tmp_path, model=model, optimizer="adamw", lr=3e-3, dataset="synthetic", vocab_size=8,
                       branching=2, train_tokens=20000, valid_tokens=4000, test_tokens=4000, seq_len=32,
                       batch_size=16, max_steps=300, steps_per_epoch=100, **SMALL_MODEL)
    floor = math.log(summary["entropy_floor_ppl"])
    assert floor < math.log(8) - 0.5
    assert summary["best_val_loss"] < math.log(8) - 0.5
    assert summary["best_val_loss"] >= floor - 0.05  # nothing beats the source's entropy rate


def test_same_seed_same_cell_gives_identical_loss_curve(tmp_path):
    settings = dict(model="gpt1", optimizer="adam", dataset="synthetic", vocab_size=16, train_tokens=5000,
                    valid_tokens=1000, test_tokens=1000, seq_len=16, batch_size=8, epochs=2, steps_per_epoch=15,
                    log_every=5, **SMALL_MODEL)
    _, first = train(tmp_path / "a", **settings)
    _, second = train(tmp_path / "b", **settings)

    def curve(record):
        return [(r.get("train_loss"), r.get("val_loss")) for r in record.read_metrics()]

    assert len(curve(first)) >= 2
    assert curve(first) == curve(second)
