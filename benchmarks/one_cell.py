"""``bench run`` of a one-cell matrix in this process, for benchmarks that measure a single cell."""

from __future__ import annotations

import json
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


@contextmanager
def trained_cell(name: str, settings: dict[str, Any]) -> Iterator[Path]:
    """Train the cell whose ``[defaults]`` are ``settings`` in a temporary folder; yields the cell's
    folder (summary, metrics, checkpoints), which is deleted when the block ends."""
    from bench.cli import main

    with tempfile.TemporaryDirectory() as folder:
        matrix = Path(folder) / "m.toml"
        defaults = "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items())
        matrix.write_text(f'name = "{name}"\n[defaults]\n' + defaults + '[matrix]\nseed = [0]\n')
        if main(["run", str(matrix), "--device", "cpu", "--outputs", str(Path(folder) / "out")]) != 0:
            raise SystemExit("bench run failed")
        (cell,) = (Path(folder) / "out" / name).glob("*/summary.json")
        yield cell.parent
