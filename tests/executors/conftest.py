"""A small matrix for the executor tests, its sequential reference run, and what "equal" means."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from bench import cli
from bench.store import ResultStore
from tests.conftest import TINY_DEFAULTS

# Three cells; checkpoints every 3 steps so a killed cell resumes mid-epoch. gpt1 with dropout
# also checks that RNG state travels with a resumed cell.
MATRIX = "name = 'pool'\n" + TINY_DEFAULTS.replace("log_every = 5", "log_every = 2") + """
checkpoint_every = 3
n_layer = 1
lr = 0.01

[matrix]
include = [
    { model = "lstm", optimizer = "adamw" },
    { model = "gpt1", optimizer = "adamw", dropout = 0.1 },
    { model = "lstm", optimizer = "momentum" },
]
"""

# Figures that measure time or memory (or where a cell resumed) differ between any two runs, and
# so does the fingerprint of metrics.jsonl, whose rows hold times (best.pt's is compared).
_TIMING = re.compile(r"(_s$|_s_|per_s$|^memory$|^mfu$|^worst_step|^step_times|^resumed_at_steps$|^budget_used$"
                     r"|^metrics\.jsonl$)")


def comparable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: comparable(v) for k, v in value.items() if not _TIMING.search(k)}
    if isinstance(value, list):
        return [comparable(v) for v in value]
    return value


def results(outputs: Path, matrix: str = "pool") -> dict[str, dict[str, Any]]:
    """Per cell: its summary and metric rows without timing figures (floats compared exactly)."""
    found = {}
    for record in ResultStore(outputs, matrix).records():
        found[record.path.name] = {"summary": comparable(record.read_summary()),
                                   "metrics": comparable(record.read_metrics())}
    return found


@pytest.fixture(scope="module")
def matrix_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("matrix") / "pool.toml"
    path.write_text(MATRIX)
    return path


@pytest.fixture(scope="module")
def reference(matrix_file, tmp_path_factory) -> dict[str, dict[str, Any]]:
    """The matrix run sequentially in this process: what every executor must reproduce."""
    outputs = tmp_path_factory.mktemp("reference")
    assert cli.main(["run", str(matrix_file), "--device", "cpu", "--outputs", str(outputs)]) == 0
    found = results(outputs)
    assert len(found) == 3 and all(cell["summary"]["status"] == "ok" for cell in found.values())
    return found
