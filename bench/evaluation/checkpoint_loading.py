"""Rebuild a finished cell's model (with its best weights) and tokenizer from its result folder.

A cell folder (``outputs/<matrix>/<cell-id>/``) holds ``config.json`` (the resolved cell) and
``best.pt`` (the state_dict of the best validation epoch, saved on CPU). The model is rebuilt
through the registry exactly as the trainer built it, so any plugin model works. ``best.pt`` is
checked against the size and SHA-256 its summary recorded before it is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bench.components import Component
from bench.errors import BenchError
from bench.fileio import fingerprint_mismatch
from bench.registry import Registry
from bench.store import BEST_WEIGHTS, CONFIG, SUMMARY, CellRecord


class NotTextCell(BenchError):
    """The cell was trained on token ids with no tokenizer, so it cannot read text."""


@dataclass
class LoadedCell:
    cell: dict[str, Any]  # id, name, config
    model: torch.nn.Module
    tokenizer: Any


def read_cell(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / CONFIG
    if not path.exists():
        raise BenchError(f"{run_dir} is not a cell folder (no {CONFIG}); pass a folder like "
                         f"outputs/<matrix>/<cell-id>/")
    cell = CellRecord(Path(run_dir)).read_config()  # a damaged file is warned about and set aside
    if cell is None:
        raise BenchError(f"{run_dir} has no readable {CONFIG}; rerun the cell with `bench run --force`")
    if not isinstance(cell.get("config"), dict):
        raise BenchError(f"{path} has no 'config' table; rerun the cell with `bench run --force`")
    return cell


def ensure_text_cell(cell: dict[str, Any]) -> None:
    config = cell["config"]
    if config.get("tokenizer") is None:
        raise NotTextCell(f"cell {cell.get('name', cell.get('id'))!r} was trained on token ids of dataset "
                          f"{config.get('dataset')!r} without a text tokenizer, so it cannot score text")


def _hparams(config: dict[str, Any], component: Component) -> dict[str, Any]:
    # A hyperparameter the plugin added after this cell was trained keeps its default.
    return {key: config.get(key, default) for key, default in component.defaults.items()}


def load_cell(run_dir: str | Path, registry: Registry, device: torch.device) -> LoadedCell:
    """The cell's tokenizer and its model with ``best.pt`` loaded, on ``device``, in eval mode.

    Raises :class:`NotTextCell` for a token-id cell and :class:`~bench.errors.BenchError` when the
    folder is not a finished cell.
    """
    run_dir = Path(run_dir)
    cell = read_cell(run_dir)
    ensure_text_cell(cell)
    config = cell["config"]
    tokenizer_component = registry.get("tokenizer", config["tokenizer"])
    tokenizer = tokenizer_component.factory(**_hparams(config, tokenizer_component))
    weights = run_dir / BEST_WEIGHTS
    if not weights.is_file():
        raise BenchError(f"{run_dir} has no {BEST_WEIGHTS} (the cell did not finish); "
                         f"run it with `bench run MATRIX` first")
    model_component = registry.get("model", config["model"])
    model = model_component.factory(tokenizer.vocab_size, **_hparams(config, model_component))
    state = _load_weights(CellRecord(run_dir), weights)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise BenchError(f"{weights} does not fit model {config['model']!r} as configured in {CONFIG} "
                         f"({first}); rerun the cell with `bench run --force`") from None
    return LoadedCell(cell, model.to(device).eval(), tokenizer)


def _load_weights(record: CellRecord, weights: Path) -> dict[str, torch.Tensor]:
    """``best.pt`` after checking it against the summary's record (when the summary has one)."""
    recorded = ((record.read_summary() or {}).get("files") or {}).get(BEST_WEIGHTS)
    reason = fingerprint_mismatch(weights, recorded) if isinstance(recorded, dict) else None
    if reason is not None:
        raise BenchError(f"{weights} does not match {SUMMARY} ({reason}); rerun the cell with "
                         f"`bench run MATRIX` (it counts as unfinished now)")
    try:
        return torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises OSError, RuntimeError, UnpicklingError...
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise BenchError(f"{weights} cannot be loaded ({type(exc).__name__}: {first}); "
                         f"rerun the cell with `bench run --force`") from None
