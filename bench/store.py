"""The result store: one folder per cell under ``outputs/<matrix>/<cell-id>/``.

Every file is written atomically (temp file, fsync, rename), so a reader (or a run killed at
any moment) sees either the old complete file or the new complete file, never a torn one.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

CONFIG = "config.json"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
BEST_WEIGHTS = "best.pt"


def _file_mode_from_umask() -> int:
    # mkstemp creates 0600 files; results should get the permissions any other new file gets.
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


FILE_MODE = _file_mode_from_umask()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Beside the target, so that os.replace stays on one filesystem and is atomic.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


class CellRecord:
    """Files of one cell."""

    def __init__(self, path: Path):
        self.path = path

    def write_config(self, cell: dict[str, Any]) -> None:
        atomic_write_json(self.path / CONFIG, cell)

    def write_metrics(self, rows: Iterable[dict[str, Any]]) -> None:
        text = "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows)
        atomic_write_bytes(self.path / METRICS, text.encode())

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_json(self.path / SUMMARY, summary)

    def write_text(self, name: str, text: str) -> None:
        atomic_write_bytes(self.path / name, text.encode())

    def read_summary(self) -> dict[str, Any] | None:
        return _read_json(self.path / SUMMARY)

    def read_metrics(self) -> list[dict[str, Any]]:
        try:
            lines = (self.path / METRICS).read_text().splitlines()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in lines if line.strip()]

    @property
    def is_complete(self) -> bool:
        summary = self.read_summary()
        return summary is not None and summary.get("status") == "ok"


class ResultStore:
    """All cells of one matrix."""

    def __init__(self, root: str | Path, matrix_name: str):
        self.root = Path(root)
        self.path = self.root / matrix_name

    def cell(self, cell_id: str) -> CellRecord:
        return CellRecord(self.path / cell_id)

    def records(self) -> list[CellRecord]:
        if not self.path.is_dir():
            return []
        return [CellRecord(p) for p in sorted(self.path.iterdir()) if (p / CONFIG).exists()]

    def summaries(self) -> list[dict[str, Any]]:
        return [s for s in (r.read_summary() for r in self.records()) if s]


def matrix_names(root: str | Path) -> list[str]:
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and any(p.glob(f"*/{CONFIG}")))


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
