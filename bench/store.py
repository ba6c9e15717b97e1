"""The result store: one folder per cell under ``outputs/<matrix>/<cell-id>/``.

Every file is written atomically (see :mod:`bench.fileio`), so a reader (or a run killed at any
moment) sees either the old complete file or the new complete file, never a torn one.

Files damaged afterwards (a disk error, a hand edit, a copy cut short) never stop a command:

* a result file that cannot be read (not UTF-8, not JSON, a summary that is not an object with
  ``id`` and ``status``) gets one warning naming it, is renamed ``<name>.corrupt`` and the cell
  counts as unfinished;
* the summary records size and SHA-256 of ``best.pt`` and ``metrics.jsonl`` (``files``) when it
  is written. Where a finished cell's files are read they are checked against it; a mismatch is
  one warning, the file is not used, and the next ``bench run`` trains the cell again.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Callable, Iterable

from bench.fileio import (
    atomic_write_bytes,
    atomic_write_json,
    fingerprint,
    fingerprint_mismatch,
    move_aside,
    sweep_temp_files,
)
from bench.record_check import config_problem, metrics_row_problem, summary_problem

__all__ = ["CellRecord", "ResultStore", "matrix_names"]

CONFIG = "config.json"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
BEST_WEIGHTS = "best.pt"
FINGERPRINTED = (BEST_WEIGHTS, METRICS)
# A summary with one of these statuses is the cell's last word, so its files must still match it.
# (An unfinished cell rewrites metrics.jsonl when it resumes; its record is only informative.)
SETTLED_STATUSES = ("ok", "diverged", "pruned")
# Settled results being trained again (stale plugin versions, --force) wait here, outside every
# cell folder (executors ship cell folders; reports read them), until a new settled result replaces them.
SUPERSEDED = ".superseded"
REQUIRED_SUMMARY_KEYS = ("id", "status")


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class CellRecord:
    """Files of one cell."""

    def __init__(self, path: Path, warn: Callable[[str], None] = _stderr):
        self.path = Path(path)
        self.warn = warn

    def write_config(self, cell: dict[str, Any]) -> None:
        atomic_write_json(self.path / CONFIG, cell)

    def write_metrics(self, rows: Iterable[dict[str, Any]]) -> None:
        text = "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows)
        atomic_write_bytes(self.path / METRICS, text.encode())

    def write_summary(self, summary: dict[str, Any]) -> None:
        """Write ``summary`` with the fingerprints of ``best.pt`` and ``metrics.jsonl`` as ``files``.

        A summary that already carries ``files`` (one rewritten to add fields) keeps them: they
        describe the files as training left them, and rehashing would bless later damage.
        """
        files = summary.get("files")
        if files is None:
            files = {name: fingerprint(self.path / name) for name in FINGERPRINTED if (self.path / name).is_file()}
        atomic_write_json(self.path / SUMMARY, {**summary, "files": files})

    def write_text(self, name: str, text: str) -> None:
        atomic_write_bytes(self.path / name, text.encode())

    def read_summary(self, verify_files: bool = False) -> dict[str, Any] | None:
        """The summary, or None when there is none or it is damaged (then set aside with a warning).

        With ``verify_files``, a settled cell whose ``best.pt`` or ``metrics.jsonl`` no longer
        matches the summary's record also reads as None (one warning): it has to be trained again.
        """
        summary = self._read_object(SUMMARY, REQUIRED_SUMMARY_KEYS, summary_problem)
        if summary is not None and verify_files and self.damaged_file(summary) is not None:
            return None
        return summary

    def read_config(self) -> dict[str, Any] | None:
        return self._read_object(CONFIG, ("id",), config_problem)

    def read_metrics(self) -> list[dict[str, Any]]:
        """The metric rows; [] when the file is missing, unreadable or (for a settled cell) not the one
        the summary recorded, each with a warning."""
        path = self.path / METRICS
        if not path.is_file():
            return []
        summary = self.read_summary()
        if summary is not None and self.damaged_file(summary, only=METRICS) is not None:
            return []
        try:
            text = path.read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            self._set_aside(path, _problem(exc))
            return []
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                self._set_aside(path, f"line {number} is not valid JSON ({exc.msg}, column {exc.colno})")
                return []
            problem = metrics_row_problem(row)
            if problem:
                self._set_aside(path, f"line {number} {problem}")
                return []
            rows.append(row)
        return rows

    def damaged_file(self, summary: dict[str, Any], only: str | None = None) -> str | None:
        """The first fingerprinted file of a settled cell that differs from the summary's record
        (warned about), or None."""
        if summary.get("status") not in SETTLED_STATUSES:
            return None
        recorded = summary.get("files") or {}
        for name in [only] if only else FINGERPRINTED:
            if not isinstance(recorded.get(name), dict):
                continue  # written by an older bench, or the file did not exist then
            reason = fingerprint_mismatch(self.path / name, recorded[name])
            if reason is not None:
                self.warn(f"warning: {self.path / name} does not match {SUMMARY} ({reason}); "
                          "the next `bench run` trains this cell again")
                return name
        return None

    @property
    def is_complete(self) -> bool:
        summary = self.read_summary()
        return summary is not None and summary.get("status") == "ok"

    def _read_object(self, name: str, required: tuple[str, ...],
                     check: Callable[[dict[str, Any]], str | None]) -> dict[str, Any] | None:
        path = self.path / name
        try:
            obj = json.loads(path.read_bytes().decode("utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            self._set_aside(path, _problem(exc))
            return None
        if not isinstance(obj, dict):
            self._set_aside(path, f"holds a JSON {_json_type(obj)}, not an object")
            return None
        missing = [key for key in required if key not in obj]
        if missing:
            self._set_aside(path, f"lacks {', '.join(repr(k) for k in missing)}")
            return None
        problem = check(obj)  # valid JSON can still hold "files": "x" or "status": 5
        if problem:
            self._set_aside(path, problem)
            return None
        return obj

    def _set_aside(self, path: Path, problem: str) -> None:
        try:
            aside = move_aside(path)
        except OSError as exc:
            self.warn(f"warning: {path} {problem}; it could not be moved aside "
                      f"({exc.strerror or exc}); the cell counts as unfinished")
            return
        self.warn(f"warning: {path} {problem}; moved it to {aside.name}; the cell counts as unfinished")


class ResultStore:
    """All cells of one matrix."""

    def __init__(self, root: str | Path, matrix_name: str):
        self.root = Path(root)
        self.path = self.root / matrix_name

    def cell(self, cell_id: str) -> CellRecord:
        return CellRecord(self.path / cell_id)

    def superseded(self, cell_id: str) -> Path:
        """Where the settled result of ``cell_id`` waits while the cell is trained again."""
        return self.path / SUPERSEDED / cell_id

    def set_aside(self, cell_id: str) -> Path:
        """Move the cell's whole folder to :meth:`superseded` (replacing an older one there), so a
        retrain that fails loses nothing; one rename, so a kill leaves it in one place or the other."""
        aside = self.superseded(cell_id)
        aside.parent.mkdir(parents=True, exist_ok=True)
        if aside.exists():
            shutil.rmtree(aside)
        os.replace(self.cell(cell_id).path, aside)
        return aside

    def restore(self, cell_id: str) -> None:
        """Put a set-aside result back (its cell never started training again)."""
        os.replace(self.superseded(cell_id), self.cell(cell_id).path)

    def drop_superseded(self, cell_id: str) -> None:
        """Delete the set-aside result once the cell has a settled result again."""
        shutil.rmtree(self.superseded(cell_id), ignore_errors=True)

    def records(self) -> list[CellRecord]:
        if not self.path.is_dir():
            return []
        return [CellRecord(p) for p in sorted(self.path.iterdir()) if _is_cell_dir(p)]

    def summaries(self) -> list[dict[str, Any]]:
        return [s for s in (r.read_summary() for r in self.records()) if s]

    def sweep_temp_files(self, *also: Path) -> list[Path]:
        """Remove temp files of writes killed before their rename, in the cell folders and ``also``;
        one line on stderr when there were any."""
        removed = sweep_temp_files(self.path, *also)
        if removed:
            _stderr(f"bench: removed {len(removed)} temp file(s) left by interrupted writes, "
                    f"e.g. {removed[0]}")
        return removed


def matrix_names(root: str | Path) -> list[str]:
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and any(_is_cell_dir(c) for c in p.iterdir()))


def _is_cell_dir(path: Path) -> bool:
    # A cell whose config was set aside as damaged still holds its summary, and the other way round.
    return (path / CONFIG).exists() or (path / SUMMARY).exists()


def _problem(exc: BaseException) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return f"is not valid UTF-8 (byte {exc.object[exc.start]:#04x} at offset {exc.start})"
    if isinstance(exc, json.JSONDecodeError):
        return f"is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
    if isinstance(exc, OSError):
        return f"cannot be read ({exc.strerror or exc})"
    return f"cannot be read ({type(exc).__name__}: {exc})"


def _json_type(obj: Any) -> str:
    return {str: "string", list: "array", bool: "boolean", int: "number", float: "number"}.get(type(obj), "null")
