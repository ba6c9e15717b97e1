"""HellaSwag for finished cells: score a cell folder and keep the figures in its summary.

The summary gains flat ``hellaswag_*`` fields (flat so that report frames pick them up like any
other figure):

* ``hellaswag_acc``, ``hellaswag_acc_stderr``, ``hellaswag_acc_norm``, ``hellaswag_acc_norm_stderr``:
  lm-eval's metrics and their standard errors;
* ``hellaswag_items`` (items scored), ``hellaswag_limit`` (the limit asked for, 0 = all),
  ``hellaswag_time_s``, ``hellaswag_items_per_s``, ``hellaswag_source`` (file or dataset),
  ``hellaswag_max_length`` (tokens the model read at most), ``hellaswag_batch_size``, ``hellaswag_device``;
* ``hellaswag_note``: why a cell has no score (token-id cell, missing data, lm-eval failure);
* ``hellaswag_samples_file``: with ``log_samples``, the cell-folder file holding one JSON line per
  item (:data:`SAMPLES_FILE`: prompt, endings, gold, each ending's log-likelihood, acc, acc_norm),
  else ``None``.

Every write replaces all earlier ``hellaswag_*`` fields, so they always describe one attempt.
Scoring inside a matrix run never fails the cell: problems become the note.
"""

from __future__ import annotations

import json
import traceback
from pathlib import Path
from typing import Any, Callable

import torch

from bench.errors import BenchError, ConfigError
from bench.evaluation.checkpoint_loading import ensure_text_cell, load_cell, read_cell
from bench.registry import Registry
from bench.store import CellRecord

PREFIX = "hellaswag_"
TRACEBACK_FILE = "hellaswag_traceback.txt"
SAMPLES_FILE = "hellaswag_samples.jsonl"


def check_eval_settings(evaluation: dict[str, Any], where: str) -> None:
    """Reject impossible ``[eval]`` values before any cell trains."""
    limit, batch = evaluation.get("limit"), evaluation.get("batch_size")
    for key in ("hellaswag", "log_samples"):
        if not isinstance(evaluation.get(key, False), bool):
            raise ConfigError(f"{where}: eval.{key} must be true or false, got {evaluation[key]!r}")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ConfigError(f"{where}: eval.limit must be an integer >= 0 (0 = every item), got {limit!r}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ConfigError(f"{where}: eval.batch_size must be an integer >= 1, got {batch!r}")


def _lm_eval_parts():
    try:
        from bench.evaluation.hellaswag import locate_hellaswag, run_hellaswag
        from bench.evaluation.lm_adapter import BenchLM
    except ImportError as exc:
        raise BenchError(f"HellaSwag scoring needs lm-eval ({exc}); install it with "
                         f"pip install 'bench-lm[eval]'") from None
    return locate_hellaswag, run_hellaswag, BenchLM


def score_cell(run_dir: str | Path, registry: Registry, device: torch.device, *, limit: int = 0,
               batch_size: int = 16, progress: bool = False, log_samples: bool = False) -> dict[str, Any]:
    """Score a finished cell's best weights on HellaSwag and write the fields into its summary;
    with ``log_samples`` also the per-item results to :data:`SAMPLES_FILE` in the cell folder.

    Raises :class:`~bench.evaluation.checkpoint_loading.NotTextCell` for a token-id cell and
    :class:`~bench.errors.BenchError` (data missing, lm-eval absent, unfinished cell) otherwise.
    """
    record = CellRecord(Path(run_dir))
    cell = read_cell(record.path)
    summary = record.read_summary()
    if not summary or summary.get("status") != "ok":
        raise BenchError(f"{record.path} holds no successfully finished cell (summary status "
                         f"{(summary or {}).get('status')!r}); run it with `bench run MATRIX` first")
    ensure_text_cell(cell)
    locate_hellaswag, run_hellaswag, BenchLM = _lm_eval_parts()
    source = locate_hellaswag()  # before loading weights: missing data fails fast
    loaded = load_cell(record.path, registry, device)
    lm = BenchLM(loaded.model, loaded.tokenizer, batch_size=batch_size, device=device,
                 dtype=loaded.cell["config"].get("dtype", "float32"), progress=progress)
    result = run_hellaswag(lm, limit=limit, source=source, log_samples=log_samples)
    samples = result.pop("samples", None)
    if samples is not None:
        record.write_text(SAMPLES_FILE, "".join(json.dumps(item, sort_keys=True) + "\n" for item in samples))
    fields = {f"{PREFIX}{key}": value for key, value in result.items()}
    fields.update({f"{PREFIX}limit": limit, f"{PREFIX}max_length": lm.max_length, f"{PREFIX}batch_size": batch_size,
                   f"{PREFIX}device": str(device), f"{PREFIX}note": None,
                   f"{PREFIX}samples_file": SAMPLES_FILE if samples is not None else None})
    write_fields(record, fields)
    return fields


def write_fields(record: CellRecord, fields: dict[str, Any]) -> None:
    """Replace the summary's ``hellaswag_*`` fields with ``fields`` (one atomic rewrite). A summary
    set aside as damaged meanwhile stays gone: these fields alone are no summary (no id, no status)."""
    summary = record.read_summary()
    if summary is None:
        return
    kept = {k: v for k, v in summary.items() if not k.startswith(PREFIX)}
    record.write_summary({**kept, **fields})


def wanted(summary: dict[str, Any] | None, evaluation: dict[str, Any] | None) -> bool:
    """True when the matrix asks for HellaSwag and this finished cell lacks a score at its limit."""
    if not evaluation or not evaluation.get("hellaswag") or not summary or summary.get("status") != "ok":
        return False
    missing_samples = evaluation.get("log_samples", False) and not summary.get(f"{PREFIX}samples_file")
    return (summary.get(f"{PREFIX}acc") is None or summary.get(f"{PREFIX}limit") != evaluation.get("limit", 0)
            or missing_samples)


def score_in_run(record: CellRecord, evaluation: dict[str, Any] | None, *, registry: Registry,
                 device: torch.device, say: Callable[[str], None], prefix: str) -> None:
    """The runner's hook after a cell: score it if asked; never raises (a Ctrl-C still stops)."""
    if evaluation is None or not wanted(record.read_summary(), evaluation):
        return
    try:
        fields = score_cell(record.path, registry, device, limit=evaluation.get("limit", 0),
                            batch_size=evaluation.get("batch_size", 16),
                            log_samples=evaluation.get("log_samples", False))
    except KeyboardInterrupt:
        raise
    except BenchError as exc:  # a token-id cell, missing data, lm-eval not installed
        note = f"skipped: {exc}"
    except Exception as exc:  # noqa: BLE001 - HellaSwag must never fail a trained cell
        record.write_text(TRACEBACK_FILE, "".join(traceback.format_exception(exc)))
        first_line = (str(exc).strip().splitlines() or [""])[0][:300]
        note = f"failed: {type(exc).__name__}: {first_line} (see {record.path / TRACEBACK_FILE})"
        if device.type == "cuda":
            torch.cuda.empty_cache()
    else:
        say(f"{prefix}: {describe(fields)}")
        return
    write_fields(record, {f"{PREFIX}note": note})
    say(f"{prefix}: hellaswag {note}")


def describe(fields: dict[str, Any]) -> str:
    """One line: ``hellaswag acc 0.2512 ± 0.0043, acc_norm ... on N items in T s (R items/s)``."""
    def with_error(name: str) -> str:
        error = fields.get(f"{PREFIX}{name}_stderr")
        return f"{fields[PREFIX + name]:.4f}" + (f" ± {error:.4f}" if error is not None else "")

    return (f"hellaswag acc {with_error('acc')}, acc_norm {with_error('acc_norm')} on "
            f"{fields[PREFIX + 'items']} items from {fields[PREFIX + 'source']} in "
            f"{fields[PREFIX + 'time_s']:.1f} s ({fields[PREFIX + 'items_per_s']:.1f} items/s)")

