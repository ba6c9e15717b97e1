"""The Ray executor on a real Ray cluster started here (one node, 2 CPUs): the sequential results,
checkpoints that travel without a shared filesystem, a killed worker that loses nothing."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from bench import cli
from bench.cells import resolve_cells
from bench.executors.ray import RayExecutor
from bench.matrix import load_matrix
from bench.registry import build_registry, plugin_manager
from bench.runner import run_cells
from bench.store import ResultStore
from tests.executors.conftest import results

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module", autouse=True)
def cluster():
    # A fresh single-node cluster on this machine (Ray itself swaps 127.0.0.1 for the host's own
    # address, so nothing is gained by asking for loopback).
    ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False)
    yield
    ray.shutdown()


def _run(matrix_file: Path, outputs: Path, executor, stop=None):
    manager = plugin_manager()
    registry = build_registry(manager)
    cells = resolve_cells(load_matrix(matrix_file), registry)
    import torch
    return run_cells(cells, registry=registry, hooks=manager.hook, store=ResultStore(outputs, "pool"),
                     device=torch.device("cpu"), stop=stop, executor=executor)


def _finished_files(outputs: Path) -> dict[str, bytes]:
    return {f"{record.path.name}/{name}": (record.path / name).read_bytes()
            for record in ResultStore(outputs, "pool").records() if record.is_complete
            for name in ("summary.json", "metrics.jsonl", "best.pt")}


class StopAfter:
    """A stop request that arrives after ``steps`` reads (the trainer reads it once per step)."""

    def __init__(self, steps: int):
        self.left, self.cause = steps, "SIGTERM"

    @property
    def requested(self) -> bool:
        self.left -= 1
        return self.left < 0


def test_ray_gives_the_sequential_results(matrix_file, reference, tmp_path, capsys):
    outputs = tmp_path / "outputs"
    assert cli.main(["run", str(matrix_file), "--device", "cpu", "--executor", "ray", "--outputs", str(outputs)]) == 0
    assert "submitted to Ray" in capsys.readouterr().err
    assert results(outputs) == reference  # every loss bitwise equal


def test_a_checkpoint_from_the_driver_resumes_on_a_ray_worker(matrix_file, reference, tmp_path, capsys):
    outputs = tmp_path / "outputs"
    # Stopped gracefully after the 6th step of the first cell, in this process: its checkpoint
    # exists only in the driver's outputs. The task gets no path, only the shipped folder.
    assert _run(matrix_file, outputs, executor=None, stop=StopAfter(6)).interrupted == "SIGTERM"
    assert cli.main(["run", str(matrix_file), "--device", "cpu", "--executor", "ray", "--outputs", str(outputs)]) == 0
    assert "resuming after step 6" in capsys.readouterr().err
    summaries = {s["name"]: s for s in ResultStore(outputs, "pool").summaries()}
    assert sorted(s["resumed_at_steps"] for s in summaries.values()) == [[], [], [6]]
    assert results(outputs) == reference
    assert not any(outputs.rglob("checkpoints"))  # the finished cell's checkpoints were removed here too


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _ours(pid: int) -> bool:
    """Whether ``pid`` descends from this process (the local cluster's raylet is our child), so a
    test never touches the Ray workers of anyone else on the machine."""
    while pid > 1:
        pid = _parent(pid)
        if pid == os.getpid():
            return True
    return False


def _ray_task_pids() -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if (proc.name.isdigit() and (proc / "cmdline").read_bytes().startswith(b"ray::train_remotely")
                    and _ours(int(proc.name))):
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def _run_killing_one_task(matrix_file: Path, outputs: Path, executor: RayExecutor) -> tuple[Any, list[int]]:
    """Run the matrix while SIGKILLing the first worker process found executing a cell's task."""
    killed, done = [], threading.Event()

    def kill_one_task_worker() -> None:
        while not done.is_set() and not killed:
            for pid in _ray_task_pids()[:1]:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            time.sleep(0.01)

    killer = threading.Thread(target=kill_one_task_worker)
    killer.start()
    try:
        return _run(matrix_file, outputs, executor), killed
    finally:
        done.set()
        killer.join()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the task's worker through /proc")
def test_a_killed_ray_worker_loses_its_cell_only_and_the_rerun_resumes_it(matrix_file, reference, tmp_path, capsys):
    outputs = tmp_path / "outputs"
    outcome, killed = _run_killing_one_task(matrix_file, outputs, RayExecutor(retries=0))
    assert len(killed) == 1
    assert list(outcome.failed.values()) == ["interrupted"] and len(outcome.finished) == 2
    lost = [s for s in ResultStore(outputs, "pool").summaries() if s["status"] == "interrupted"]
    assert len(lost) == 1 and "Ray task lost" in lost[0]["reason"]
    finished = _finished_files(outputs)

    assert cli.main(["run", str(matrix_file), "--device", "cpu", "--executor", "ray", "--outputs", str(outputs)]) == 0
    assert "2 already complete" in capsys.readouterr().err
    # nothing finished was touched
    assert {k: v for k, v in _finished_files(outputs).items() if k in finished} == finished
    assert results(outputs) == reference


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the task's worker through /proc")
def test_a_killed_ray_worker_is_retried(matrix_file, reference, tmp_path):
    outputs = tmp_path / "outputs"
    outcome, killed = _run_killing_one_task(matrix_file, outputs, RayExecutor(retries=1))
    assert len(killed) == 1 and len(outcome.finished) == 3 and not outcome.failed
    assert results(outputs) == reference
