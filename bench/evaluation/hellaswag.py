"""Run lm-eval's own ``hellaswag`` task on a :class:`~bench.evaluation.lm_adapter.BenchLM`.

Nothing about HellaSwag is reimplemented here: the prompt (``process_docs`` of lm-eval's
``tasks/hellaswag``), the choices, the metrics (``acc`` and the length-normalised ``acc_norm``)
and their standard errors all come from the installed lm-eval.

Where the items come from:

1. ``hellaswag/hellaswag_val.jsonl`` under the data directory (``BENCH_DATA_DIR``, then the
   user's default data directory), in the official HellaSwag jsonl schema (``ind``,
   ``activity_label``, ``ctx_a``, ``ctx_b``, ``ctx``, ``split``, ``split_type``, ``label``,
   ``endings``, ``source_id``). A small task file ``include``s lm-eval's ``hellaswag.yaml`` and
   only swaps its dataset for the ``json`` builder on that file, so lm-eval's preprocessing runs
   unchanged and the results are reported under the task name ``hellaswag``. This works offline.
2. Otherwise, lm-eval's default dataset (``Rowan/hellaswag`` from the Hugging Face Hub),
   unless ``HF_DATASETS_OFFLINE``, ``HF_HUB_OFFLINE`` or ``BENCH_OFFLINE`` forbids the download,
   in which case :func:`locate_hellaswag` raises :class:`~bench.errors.DataMissingError`.

Only lm-eval's ``hellaswag`` folder is indexed (not its ~15,000 other task files), which keeps
the start-up to well under a second.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import yaml

from bench.data.datadir import DATA_DIR_ENV, cache_dir, data_dir, locate, offline
from bench.errors import DataMissingError

TASK = "hellaswag"
LOCAL_FILE = "hellaswag/hellaswag_val.jsonl"
HUB_DATASET = "Rowan/hellaswag"
_OFFLINE_VARIABLES = ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")


@dataclass(frozen=True)
class HellaSwagSource:
    """A local jsonl file, or ``None`` for lm-eval's default download."""

    local_file: Path | None

    def describe(self) -> str:
        return str(self.local_file) if self.local_file else f"{HUB_DATASET} (lm-eval default)"


def downloads_forbidden() -> bool:
    flags = [os.environ.get(name, "").strip().lower() for name in _OFFLINE_VARIABLES]
    return offline() or any(flag in ("1", "true", "yes", "on") for flag in flags)


def locate_hellaswag() -> HellaSwagSource:
    """The local validation file if the data directory has one, else lm-eval's download."""
    try:
        root = locate([LOCAL_FILE], dataset=TASK)
    except DataMissingError:
        if downloads_forbidden():
            raise DataMissingError(
                f"HellaSwag needs {LOCAL_FILE} (official jsonl schema) under {data_dir()} and downloads "
                f"are off; set {DATA_DIR_ENV} to the folder that holds hellaswag/, or unset "
                f"{', '.join(_OFFLINE_VARIABLES)} and BENCH_OFFLINE so lm-eval downloads {HUB_DATASET}"
            ) from None
        return HellaSwagSource(None)
    return HellaSwagSource(root / LOCAL_FILE)


def _builtin_task_dir() -> Path:
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).parent / TASK


def local_task_config(jsonl: Path) -> dict[str, Any]:
    """lm-eval's hellaswag task, reading ``jsonl`` with the ``json`` builder."""
    return {
        "include": str(_builtin_task_dir() / f"{TASK}.yaml"),
        "task": TASK,
        "dataset_path": "json",
        "dataset_name": None,
        # Arrow files that `datasets` derives go to bench's cache, never next to the user's data.
        "dataset_kwargs": {"data_files": {"validation": str(Path(jsonl).resolve())},
                           "cache_dir": str(cache_dir() / "hf-datasets")},
        # The local file holds only the validation split, which is what lm-eval scores.
        "training_split": None,
        "validation_split": "validation",
    }


@contextmanager
def task_manager(source: HellaSwagSource) -> Iterator[Any]:
    from lm_eval.tasks import TaskManager

    if source.local_file is None:
        yield TaskManager(include_path=str(_builtin_task_dir()), include_defaults=False)
        return
    with tempfile.TemporaryDirectory(prefix="bench-hellaswag-") as folder:
        (Path(folder) / f"{TASK}_local.yaml").write_text(yaml.safe_dump(local_task_config(source.local_file)))
        yield TaskManager(include_path=folder, include_defaults=False)


@contextmanager
def _quiet_lm_eval() -> Iterator[None]:
    # lm-eval logs every step at INFO and `datasets` draws progress bars for a few-second load;
    # bench prints its own one-line result instead.
    import datasets

    logger = logging.getLogger("lm_eval")
    previous_level, bars_were_off = logger.level, datasets.are_progress_bars_disabled()
    logger.setLevel(logging.WARNING)
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        logger.setLevel(previous_level)
        if not bars_were_off:
            datasets.enable_progress_bars()


def run_hellaswag(lm: Any, *, limit: int = 0, source: HellaSwagSource | None = None,
                  log_samples: bool = False) -> dict[str, Any]:
    """Score ``lm`` on HellaSwag (the first ``limit`` items; 0 = all) through ``lm_eval.simple_evaluate``.

    Returns ``acc``, ``acc_stderr``, ``acc_norm``, ``acc_norm_stderr``, ``items`` (how many were
    scored), ``time_s`` and ``items_per_s`` (wall time of the whole lm-eval call) and ``source``;
    with ``log_samples`` also ``samples``, one :func:`item_record` per item.
    """
    from lm_eval import simple_evaluate

    source = source or locate_hellaswag()
    started = time.perf_counter()
    with _quiet_lm_eval(), task_manager(source) as manager:
        output = simple_evaluate(model=lm, tasks=[TASK], limit=limit or None,
                                 task_manager=manager, log_samples=log_samples)
    elapsed = time.perf_counter() - started
    metrics = output["results"][TASK]
    items = int(output["n-samples"][TASK]["effective"])
    result: dict[str, Any] = {
        "acc": float(metrics["acc,none"]), "acc_stderr": _number(metrics.get("acc_stderr,none")),
        "acc_norm": float(metrics["acc_norm,none"]),
        "acc_norm_stderr": _number(metrics.get("acc_norm_stderr,none")),
        "items": items, "time_s": elapsed, "items_per_s": items / elapsed if elapsed > 0 else None,
        "source": source.describe(),
    }
    if log_samples:
        result["samples"] = [item_record(sample) for sample in output["samples"][TASK]]
    return result


def item_record(sample: dict[str, Any]) -> dict[str, Any]:
    """One item of lm-eval's logged samples, kept small: the prompt, the endings, the gold index,
    each ending's summed log-likelihood and greedy flag, and the item's acc / acc_norm (0 or 1)."""
    doc = sample["doc"]
    return {
        "doc_id": sample["doc_id"], "ind": doc.get("ind"), "source_id": doc.get("source_id"),
        "query": doc["query"], "endings": doc["choices"], "gold": int(doc["gold"]),
        "loglikelihoods": [float(ll) for ll, _ in sample["filtered_resps"]],
        "is_greedy": [bool(greedy) for _, greedy in sample["filtered_resps"]],
        "acc": float(sample["acc"]), "acc_norm": float(sample["acc_norm"]),
    }


def _number(value: Any) -> float | None:
    # lm-eval writes "N/A" where it could not compute a standard error (e.g. a single item).
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
