"""Shared fixtures: an isolated cache and outputs folder, and a way to run the real CLI."""

from __future__ import annotations

import gc
import importlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

# Spawned worker processes unpickle test helpers by module name (tests.executors...), so the
# repository root must be importable in them too; `python -m pytest` puts it on sys.path, the
# `pytest` script (what tox runs) does not, and spawn children inherit the parent's sys.path.
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# The test models are tiny: one thread runs them faster than two threads contending, and keeps
# the suite's time steady on a loaded 2-core machine. Subprocesses inherit the same setting.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)


@pytest.fixture(scope="module", autouse=True)
def frozen_heap() -> None:
    """Collect, then move every surviving object (imported modules: torch, torch._dynamo, optuna, ...)
    out of the collector's reach. The runner's gc.collect() after each cell then scans only what
    the tests made since; over this process's whole heap it took ~0.25 s per cell (tests/sweep,
    test_runner.py and test_memory.py ran in 59 s instead of 93 s). Garbage is collected first, so
    nothing collectable is kept."""
    gc.collect()
    gc.freeze()


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    # Token caches from one test must not leak into another's timing or correctness.
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "bench-cache"))


@pytest.fixture
def write_matrix(tmp_path):
    def write(body: str, name: str = "tiny") -> Path:
        path = tmp_path / f"{name}.toml"
        path.write_text(textwrap.dedent(body))
        return path
    return write


# The data and shape of a tiny GPT-1 cell, shared by sweep and estimate tests, which add their own
# steps, logging and components below it (still the [defaults] table).
TINY_SWEEP_CELL = """
[defaults]
dataset = "synthetic"
vocab_size = 16
train_tokens = 3000
valid_tokens = 300
test_tokens = 300
seq_len = 16
batch_size = 4
n_embd = 16
n_head = 2
n_positions = 32
"""


def sweep_studies(outputs: Path, name: str) -> dict:
    """The Optuna studies of matrix ``name``'s sweep under ``outputs``, by study name."""
    import optuna

    storage = optuna.storages.RDBStorage(f"sqlite:///{outputs / name / 'sweep.db'}")
    return {n: optuna.load_study(study_name=n, storage=storage) for n in optuna.study.get_all_study_names(storage)}


TINY_DEFAULTS = """
[defaults]
dataset = "synthetic"
vocab_size = 16
train_tokens = 4000
valid_tokens = 600
test_tokens = 600
seq_len = 16
batch_size = 8
epochs = 2
steps_per_epoch = 10
n_embd = 16
n_hidden = 16
n_head = 2
n_positions = 32
log_every = 5
"""


@pytest.fixture
def bench_cli(tmp_path):
    """Run ``bench`` in a subprocess with its outputs under tmp_path; returns CompletedProcess."""
    def run(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
        full_env = {**os.environ, "BENCH_OUTPUTS": str(tmp_path / "outputs"), **(env or {})}
        return subprocess.run([sys.executable, "-m", "bench.cli", *args], capture_output=True, text=True,
                              env=full_env, cwd=tmp_path, timeout=timeout)
    return run


def make_distribution(site: Path, dist_name: str, module: str, source: str, version: str = "0.1") -> None:
    """Lay out an installed distribution by hand: its module and a .dist-info with entry points, found
    by importlib.metadata exactly like a pip-installed plugin once ``site`` is on sys.path."""
    (site / module).mkdir(parents=True, exist_ok=True)
    (site / module / "__init__.py").write_text(textwrap.dedent(source))
    for old in site.glob(f"{dist_name.replace('-', '_')}-*.dist-info"):  # an "upgrade" replaces the old one
        for path in old.iterdir():
            path.unlink()
        old.rmdir()
    info = site / f"{dist_name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist_name}\nVersion: {version}\n"
                                 "Requires-Dist: bench-lm\n")
    (info / "entry_points.txt").write_text(f"[bench.plugins]\n{module} = {module}\n")
    importlib.invalidate_caches()


@pytest.fixture
def plugin_site(tmp_path, monkeypatch):
    """An empty site folder on sys.path (for in-process discovery); modules imported from it are
    forgotten afterwards so the next test's distribution of the same name is imported afresh."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    before = set(sys.modules)
    yield site
    for name in set(sys.modules) - before:
        module = sys.modules.get(name)
        if str(site) in str(getattr(module, "__file__", "") or ""):
            del sys.modules[name]


@pytest.fixture(scope="session")
def hyperband_sweep(tmp_path_factory) -> tuple[Path, tuple]:
    """The Hyperband sweep of tests/sweep/test_driver.py (its matrix file), trained sequentially in this
    process once per session: its state is what the local pool and Ray must both reproduce (~7 s each)."""
    from bench import cli
    from tests.sweep.test_driver import HYPERBAND, sweep_state
    folder = tmp_path_factory.mktemp("hyperband")
    path = folder / "hb.toml"
    path.write_text(HYPERBAND)
    assert cli.main(["run", str(path), "--outputs", str(folder / "reference")]) == 0
    state = sweep_state(folder / "reference")
    assert [len(t) for t in state[0].values()] == [5, 5]
    return path, state
