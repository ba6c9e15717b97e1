"""The Ray executor on a real Ray cluster started here (`ray start --head` on 127.0.0.1, one node,
2 CPUs) and reached through bench's own --ray-address: the sequential results, checkpoints that
travel without a shared filesystem, a killed worker that loses nothing, a stop that leaves queued
cells alone, a sweep that comes out as it does sequentially."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from bench import cli
from bench.cells import resolve_cells
from bench.executors.ray import RayExecutor
from bench.matrix import load_matrix
from bench.registry import build_registry, plugin_manager
from bench.runner import run_cells
from bench.store import ResultStore
from tests.executors.conftest import results

# On Linux Ray swaps 127.0.0.1 for the host's own address (in `ray start` and in the driver's
# ray.init) unless told the machine is a single-node cluster; the variable, read when ray is
# imported, is named for Windows and macOS, where that is the default. The cluster accepts only
# drivers holding this run's fresh token (Ray's token authentication).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AUTH_MODE", "token")
os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
ray = pytest.importorskip("ray")

START_TIMEOUT_S = 120


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A fresh head node on 127.0.0.1 with its own temp dir and ports (nothing shared with any other
    Ray on this machine); yields its address. Stopped by ending the `--block` process we started."""
    from ray._private import ray_constants
    if ray_constants.ENABLE_RAY_CLUSTER:
        pytest.fail("ray was imported before this module set RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0")
    temp = tempfile.mkdtemp(prefix="bench-ray-")  # short: Ray's socket paths must fit in 107 bytes
    port = _free_port()
    ports = [f"--{name}={_free_port()}" for name in ("dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                                                     "runtime-env-agent-port", "metrics-export-port")]
    log = Path(temp) / "start.log"
    with log.open("w") as out:
        head = subprocess.Popen([sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block",
                                 "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2", "--num-gpus=0",
                                 "--include-dashboard=false", f"--temp-dir={temp}", "--disable-usage-stats", *ports],
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while "Ray runtime started" not in log.read_text():
            assert head.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        ray.shutdown()
        head.terminate()
        try:
            head.wait(60)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait()
        shutil.rmtree(temp, ignore_errors=True)


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


def _ray_run(matrix_file: Path, outputs: Path, cluster: str, *extra: str) -> int:
    return cli.main(["run", str(matrix_file), "--device", "cpu", "--executor", "ray", "--ray-address", cluster,
                     "--outputs", str(outputs), *extra])


def test_ray_gives_the_sequential_results_on_a_loopback_cluster(matrix_file, reference, cluster, tmp_path, capsys):
    outputs = tmp_path / "outputs"
    assert _ray_run(matrix_file, outputs, cluster) == 0
    err = capsys.readouterr().err
    assert f"running on Ray cluster at {cluster}" in err and "submitted to Ray" in err
    assert results(outputs) == reference  # every loss bitwise equal
    # The cluster bench connected to lives on loopback: its one node, and the GCS it talks to.
    assert [node["NodeManagerAddress"] for node in ray.nodes()] == ["127.0.0.1"]
    assert ray.get_runtime_context().gcs_address == cluster


def test_a_checkpoint_from_the_driver_resumes_on_a_ray_worker(matrix_file, reference, cluster, tmp_path, capsys):
    outputs = tmp_path / "outputs"
    # Stopped gracefully after the 6th step of the first cell, in this process: its checkpoint
    # exists only in the driver's outputs. The task gets no path, only the shipped folder.
    assert _run(matrix_file, outputs, executor=None, stop=StopAfter(6)).interrupted == "SIGTERM"
    assert _ray_run(matrix_file, outputs, cluster) == 0
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
def test_a_killed_ray_worker_loses_its_cell_only_and_the_rerun_resumes_it(matrix_file, reference, cluster, tmp_path,
                                                                          capsys):
    outputs = tmp_path / "outputs"
    outcome, killed = _run_killing_one_task(matrix_file, outputs, RayExecutor(address=cluster, retries=0))
    assert len(killed) == 1
    assert list(outcome.failed.values()) == ["interrupted"] and len(outcome.finished) == 2
    lost = [s for s in ResultStore(outputs, "pool").summaries() if s["status"] == "interrupted"]
    assert len(lost) == 1 and "Ray task lost" in lost[0]["reason"]
    finished = _finished_files(outputs)

    assert _ray_run(matrix_file, outputs, cluster) == 0
    assert "2 already complete" in capsys.readouterr().err
    # nothing finished was touched
    assert {k: v for k, v in _finished_files(outputs).items() if k in finished} == finished
    assert results(outputs) == reference


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the task's worker through /proc")
def test_a_killed_ray_worker_is_retried(matrix_file, reference, cluster, tmp_path):
    outputs = tmp_path / "outputs"
    outcome, killed = _run_killing_one_task(matrix_file, outputs, RayExecutor(address=cluster, retries=1))
    assert len(killed) == 1 and len(outcome.finished) == 3 and not outcome.failed
    assert results(outputs) == reference


class StopWhenTwoTasksTrain:
    """A stop request that arrives once two cells' tasks are running (the cluster's 2 CPUs are taken,
    so the third cell's task is still queued), seen on two polls in a row."""

    cause, polls = "SIGTERM", 0

    @property
    def requested(self) -> bool:
        self.polls = self.polls + 1 if self.polls >= 2 or len(_ray_task_pids()) >= 2 else 0
        return self.polls >= 2  # a stop request stays made


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the task's worker through /proc")
def test_a_stop_cancels_queued_tasks_and_leaves_their_cells_untouched(matrix_file, cluster, tmp_path):
    long = tmp_path / "pool.toml"  # cells of 4000 steps: they are still training when the stop comes
    long.write_text(matrix_file.read_text().replace("steps_per_epoch = 10", "steps_per_epoch = 2000"))
    outputs = tmp_path / "outputs"
    outcome = _run(long, outputs, RayExecutor(address=cluster), stop=StopWhenTwoTasksTrain())
    assert outcome.interrupted == "SIGTERM"
    # Each cell whose task had begun checkpointed where it was; the queued third cell's task was
    # cancelled and left no folder at all. So did a running task that had not yet reached the stop
    # actor when the stop came (on a loaded machine, both may be refused).
    summaries = ResultStore(outputs, "pool").summaries()
    assert len(summaries) <= 2 and all(s["status"] == "interrupted" for s in summaries), summaries
    folders = (outputs / "pool").iterdir() if (outputs / "pool").exists() else []
    assert sorted(p.name for p in folders) == sorted(s["id"] for s in summaries)
    assert all(any((outputs / "pool" / s["id"] / "checkpoints").iterdir()) for s in summaries)
    assert not any("momentum" in s["name"] for s in summaries)  # the matrix's third cell


def test_a_sweep_on_ray_equals_the_sequential_sweep(hyperband_sweep, cluster, tmp_path, capsys):
    from tests.sweep.test_driver import sweep_state
    path, sequential = hyperband_sweep  # trained one cell after another in this process
    assert _ray_run(path, tmp_path / "ray", cluster) == 0
    assert "submitted to Ray" in capsys.readouterr().err
    assert sweep_state(tmp_path / "ray") == sequential  # same trials, bitwise losses
