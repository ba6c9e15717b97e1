"""The types of the fields bench reads back from a cell's ``summary.json``, ``config.json`` and
``metrics.jsonl``.

A file can be valid JSON and still be damaged (a hand edit, another tool's output): ``"files": "x"``
or ``"status": 5`` would otherwise surface as an AttributeError deep inside `bench run` or `bench
plot`. Each checker returns one phrase naming the first bad field (the store's warning reads
``warning: <path> <phrase>; moved it to ...``), or None. Keys bench does not know (a plugin's or
a hook's additions) are not checked.
"""

from __future__ import annotations

import json
import math
from typing import Any

from bench.schema import TRAINER_KEYS, type_error

__all__ = ["STATUSES", "config_problem", "metrics_row_problem", "summary_problem"]

STATUSES = ("ok", "diverged", "pruned", "oom", "error", "interrupted", "paused")

_TEXT = ("id", "status", "name", "device", "torch", "eval_windows", "reason", "matmul_precision")
_TEXT_OR_NULL = ("text_tokenizer", "gpu_name", "stopped_by", "peak_flops_source", "hellaswag_note")
_OBJECTS = ("config", "provenance", "files")
_OBJECTS_OR_NULL = ("memory", "budget", "budget_used", "eval_tokens")
_LISTS = ("resumed_at_steps", "step_times_10_19_s")
# Written by the trainer (bench.training.summary, bench.timing, bench.runner); number or null.
_NUMBERS = (
    "vocab_size", "params_total", "params_non_embedding", "flops_per_token", "train_flops", "steps",
    "planned_steps", "tokens_per_step", "epochs", "train_tokens", "best_epoch", "best_val_loss", "best_val_ppl",
    "best_val_word_ppl", "train_ppl_at_best", "test_loss", "test_ppl", "test_word_ppl", "eval_words",
    "entropy_floor_ppl", "train_time_s", "eval_time_s", "checkpoint_time_s", "compile_time_s", "tokens_per_s",
    "micro_batch_size", "grad_accum_used", "worst_step_10_19_s", "worst_step_10_19_index", "time_per_step_s",
    "time_per_epoch_s", "achieved_flops_per_s", "peak_flops_per_s", "mfu", "step", "total_steps",
    "val_loss", "val_ppl",
)
# An `ok` result's figures are finite: finishing needs a finite validation loss.
_FINITE_WHEN_OK = ("best_val_loss", "best_val_ppl", "test_loss", "test_ppl", "train_time_s")
_METRIC_NUMBERS = ("step", "epoch", "train_loss", "val_loss", "val_ppl", "train_ppl", "lr", "elapsed_s",
                   "val_word_ppl", "train_time_s", "eval_time_s")


def summary_problem(summary: dict[str, Any]) -> str | None:
    """What is wrong with a summary's fields, or None."""
    problem = _fields_problem(summary)
    if problem:
        return problem
    if summary["status"] not in STATUSES:
        return f"has \"status\": {_shown(summary['status'])}, not one of {', '.join(STATUSES)}"
    if summary["status"] == "ok":
        for key in _FINITE_WHEN_OK:
            value = summary.get(key)
            if isinstance(value, float) and not math.isfinite(value):
                return f"has \"{key}\": {_shown(value)} in a finished (ok) result, which needs a finite number"
    for name, record in summary["files"].items():
        if not (isinstance(record, dict) and _is_int(record.get("bytes")) and isinstance(record.get("sha256"), str)):
            return f"has \"files\".\"{name}\": {_shown(record)}, not an object with bytes and sha256"
    return _config_values_problem(summary.get("config"), "\"config\"")


def config_problem(config_file: dict[str, Any]) -> str | None:
    """What is wrong with a ``config.json`` (``id``, ``name``, ``config``, ``provenance``), or None."""
    return _fields_problem(config_file) or _config_values_problem(config_file.get("config"), "\"config\"")


def metrics_row_problem(row: Any) -> str | None:
    """What is wrong with one row of ``metrics.jsonl``, or None."""
    if not isinstance(row, dict):
        return f"holds {_shown(row)}, not an object"
    for key in _METRIC_NUMBERS:
        if key in row and row[key] is not None and not _is_number(row[key]):
            return f"has \"{key}\": {_shown(row[key])}, not a number"
    return None


def _fields_problem(obj: dict[str, Any]) -> str | None:
    for keys, ok, expected in (
            (_TEXT, lambda v: isinstance(v, str), "a string"),
            (_TEXT_OR_NULL, lambda v: v is None or isinstance(v, str), "a string or null"),
            (_OBJECTS, lambda v: isinstance(v, dict), "an object"),
            (_OBJECTS_OR_NULL, lambda v: v is None or isinstance(v, dict), "an object or null"),
            (_LISTS, lambda v: isinstance(v, list), "a list"),
            (_NUMBERS, lambda v: v is None or _is_number(v), "a number or null")):
        for key in keys:
            if key in obj and not ok(obj[key]):
                return f"has \"{key}\": {_shown(obj[key])}, not {expected}"
    return None


def _config_values_problem(config: Any, where: str) -> str | None:
    """The harness keys of a stored cell configuration must have the types and ranges a matrix allows."""
    if config is None:
        return None
    for name, key in TRAINER_KEYS.items():
        if name not in config:
            continue
        value = config[name]
        if type_error(name, value, key.default):
            return f"has {where}.\"{name}\": {_shown(value)}, of the wrong type"
        if key.check is not None and value is not None and not _checks(key.check, value):
            return f"has {where}.\"{name}\": {_shown(value)}, which must be {key.requirement}"
    return None


def _checks(check: Any, value: Any) -> bool:
    try:
        return bool(check(value))
    except TypeError:
        return False


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _shown(value: Any, limit: int = 40) -> str:
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
