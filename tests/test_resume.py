"""Kill -9 at random moments, graceful stops, a second concurrent run, a truncated checkpoint:
nothing finished is lost and every resumed loss curve equals the uninterrupted one."""

from __future__ import annotations

import functools
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from bench import cli
from bench.cells import resolve_cells
from bench.checkpoint import CHECKPOINT_DIR, CheckpointStore
from bench.matrix import load_matrix
from bench.registry import build_registry, plugin_manager
from bench.runner import run_cells
from bench.store import ResultStore
from tests.conftest import TINY_DEFAULTS

# Three small cells; gpt1 with dropout also checks that the torch RNG is restored.
MATRIX = TINY_DEFAULTS.replace("log_every = 5", "log_every = 2") + """
checkpoint_every = 3
n_layer = 1

[matrix]
include = [
    { model = "lstm", optimizer = "adamw" },
    { model = "gpt1", optimizer = "adamw", dropout = 0.1 },
    { model = "lstm", optimizer = "momentum" },
]
"""



def with_async(matrix: str, background: bool) -> str:
    return matrix.replace("checkpoint_every = 3", f"checkpoint_every = 3\ncheckpoint_async = {str(background).lower()}")


# Runs `bench` and SIGKILLs its own process at the N-th call of one function: a fault injected
# around the real code, at a chosen place (mid-step, mid-checkpoint-write, mid-evaluation...).
TRAP = textwrap.dedent("""
    import os, signal, sys, time
    import bench.cli, bench.training.run
    from bench.data.samplers import RandomBatchSampler

    kind, nth, pause_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    calls = 0

    def trap(real, wanted=lambda *a, **k: True):
        def wrapper(*args, **kwargs):
            global calls
            if wanted(*args, **kwargs):
                calls += 1
                if calls == nth and kind == "pause":
                    # Hold still (as a long step would) until the test lets the run go on.
                    open(os.path.join(pause_dir, "paused"), "w").close()
                    while not os.path.exists(os.path.join(pause_dir, "release")):
                        time.sleep(0.02)
                elif calls == nth:
                    os.kill(os.getpid(), signal.SIGKILL)
            return real(*args, **kwargs)
        return wrapper

    into = lambda suffix: lambda src, dst, *a, **k: str(dst).endswith(suffix)
    if kind in ("batch", "pause"):
        RandomBatchSampler.next_batch = trap(RandomBatchSampler.next_batch)
    elif kind == "checkpoint-rename":
        os.replace = trap(os.replace, into(".pt"))
    elif kind == "index-rename":
        os.replace = trap(os.replace, into("index.json"))
    elif kind == "summary-rename":
        os.replace = trap(os.replace, into("summary.json"))
    elif kind == "fsync":
        os.fsync = trap(os.fsync)
    elif kind == "evaluate":
        bench.training.run.evaluate = trap(bench.training.run.evaluate)
    sys.exit(bench.cli.main(sys.argv[4:]))
""")


@pytest.fixture
def runner(tmp_path):
    script = tmp_path / "trap_run.py"
    script.write_text(TRAP)

    def start(matrix: Path, outputs: Path, kind: str = "none", nth: int = 0) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, str(script), kind, str(nth), str(tmp_path), "run", str(matrix),
                                 "--device", "cpu", "--outputs", str(outputs)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    return start


def _curves(outputs: Path, matrix: str) -> dict[str, dict]:
    """Per cell: the loss curve (log and epoch rows) and the final figures."""
    curves = {}
    for record in ResultStore(outputs, matrix).records():
        summary = record.read_summary() or {}
        rows = [(r["kind"], r["step"], r.get("train_loss"), r.get("val_loss")) for r in record.read_metrics()
                if r["kind"] in ("log", "epoch")]
        curves[record.path.name] = {"rows": rows, "status": summary.get("status"),
                                    "final": (summary.get("best_val_loss"), summary.get("test_loss"))}
    return curves


def max_curve_difference(reference: dict, resumed: dict) -> float:
    assert set(reference) == set(resumed)
    worst = 0.0
    for cell, ref in reference.items():
        got = resumed[cell]
        assert [r[:2] for r in got["rows"]] == [r[:2] for r in ref["rows"]], cell
        pairs = [(a, b) for r, g in zip(ref["rows"], got["rows"]) for a, b in zip(r[2:], g[2:]) if a is not None]
        pairs += list(zip(ref["final"], got["final"]))
        worst = max([worst] + [abs(a - b) for a, b in pairs])
    return worst


def _finished_files(outputs: Path, matrix: str) -> dict[str, dict[str, bytes]]:
    done = {}
    for record in ResultStore(outputs, matrix).records():
        summary = record.read_summary()
        if summary and summary["status"] == "ok":
            done[record.path.name] = {name: (record.path / name).read_bytes()
                                      for name in ("summary.json", "metrics.jsonl", "best.pt")}
    return done


def _assert_consistent(outputs: Path, matrix: str) -> None:
    """Whatever the kill interrupted, every file on disk is whole and every index names real files."""
    for record in ResultStore(outputs, matrix).records():
        for name in ("config.json", "summary.json"):
            if (record.path / name).exists():
                json.loads((record.path / name).read_text())
        record.read_metrics()
        checkpoints = CheckpointStore(record.path / CHECKPOINT_DIR, record.path.name)
        if checkpoints.index_path.exists():
            index = json.loads(checkpoints.index_path.read_text())
            missing = [e["file"] for e in index.values() if e and not (checkpoints.directory / e["file"]).exists()]
            assert not missing, f"{checkpoints.index_path} names missing files {missing}"


@pytest.fixture(scope="module")
def reference_curves(tmp_path_factory) -> dict[str, dict]:
    """MATRIX run uninterrupted in this process, once for both parametrizations below."""
    folder = tmp_path_factory.mktemp("reference")
    (folder / "reference.toml").write_text(MATRIX)
    assert cli.main(["run", str(folder / "reference.toml"), "--device", "cpu", "--outputs", str(folder)]) == 0
    return _curves(folder, "reference")


@pytest.mark.parametrize("background", [False, True], ids=["sync", "async"])
def test_sigkill_at_random_points_loses_nothing(write_matrix, tmp_path, runner, capsys, background, reference_curves):
    # The reference always saves synchronously: an async run killed anywhere must resume to its curves.
    # With async on, a cell's first save is synchronous and its later ones are background writes, so
    # the second .pt rename and the second and third index renames are kills inside the writer thread.
    path = write_matrix(with_async(MATRIX, background))
    reference = reference_curves

    # Where each run dies, as (trap, N-th call); N is drawn at random within what the remaining
    # work surely reaches. "external" is a plain SIGKILL from outside at a random delay.
    draw = random.Random(int(os.environ.get("BENCH_KILL_SEED", "5")))
    plan = [("batch", draw.randint(2, 12)), ("checkpoint-rename", draw.randint(1, 2)), ("summary-rename", 1),
            ("index-rename", draw.randint(1, 3)), ("external", draw.uniform(0.0, 0.4)),
            ("evaluate", draw.randint(1, 2))]
    outputs = tmp_path / "killed"
    finished: dict[str, dict[str, bytes]] = {}
    kills, lost, messages = [], 0, []
    for kind, where in plan:
        if kind == "external":
            process = runner(path, outputs)
            while "training" not in (line := process.stderr.readline()) and line:
                messages.append(line)
            time.sleep(where)
            process.send_signal(signal.SIGKILL)
        else:
            process = runner(path, outputs, kind, where)
        out, err = process.communicate(timeout=120)
        messages.append(err)
        if process.returncode == 0:
            break  # the matrix finished before this trap fired: no more kill points
        assert process.returncode == -signal.SIGKILL, err
        kills.append(f"{kind}#{where:.3g}")
        try:
            _assert_consistent(outputs, "tiny")
        except AssertionError as exc:
            raise AssertionError(f"after the kill at {kind}#{where}: {exc}\n{err}") from None
        now = _finished_files(outputs, "tiny")
        lost += sum(1 for cell, files in finished.items() if now.get(cell) != files)
        finished.update(now)

    capsys.readouterr()
    assert cli.main(["run", str(path), "--device", "cpu", "--outputs", str(outputs)]) == 0  # the last rerun
    messages.append(capsys.readouterr().err)
    now = _finished_files(outputs, "tiny")
    lost += sum(1 for cell, files in finished.items() if now.get(cell) != files)
    resumed = _curves(outputs, "tiny")
    difference = max_curve_difference(reference, resumed)
    print(f"\nSIGKILL points tried: {len(kills)} ({', '.join(kills)}); results lost: {lost}; "
          f"max loss-curve difference after resume: {difference:.3g}")
    assert len(kills) >= 5
    assert lost == 0
    assert all(cell["status"] == "ok" for cell in resumed.values())
    assert difference == 0.0  # bit for bit, async included
    log = "".join(messages)
    assert "taking over the stale lock" in log and "resuming after step" in log
    assert not any((outputs / "tiny" / cell / CHECKPOINT_DIR).exists() for cell in resumed)


def test_second_run_is_refused_and_sigterm_stops_gracefully(write_matrix, tmp_path, runner, capsys):
    path = write_matrix(MATRIX.split("[matrix]")[0] + '[matrix]\nmodel = ["lstm"]\noptimizer = ["sgd"]\n')
    outputs = tmp_path / "outputs"
    first = runner(path, outputs, "pause", 9)  # holds still inside step 9
    deadline = time.monotonic() + 120
    while not (tmp_path / "paused").exists():
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.05)

    capsys.readouterr()
    assert cli.main(["run", str(path), "--device", "cpu", "--outputs", str(outputs)]) == 2  # the second run
    assert f"is in use by another `bench run` (pid {first.pid} on host" in capsys.readouterr().err

    first.send_signal(signal.SIGTERM)
    (tmp_path / "release").touch()
    _, err = first.communicate(timeout=120)
    assert first.returncode == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM after step 9" in err
    (record,) = ResultStore(outputs, "tiny").records()
    summary = record.read_summary()
    assert summary["status"] == "interrupted" and summary["step"] == 9
    saved = CheckpointStore(record.path / CHECKPOINT_DIR, record.path.name).load()
    assert saved.state["step"] == 9
    time_before_stop = saved.state["loop"]["clocks"]["train"]

    capsys.readouterr()
    assert cli.main(["run", str(path), "--device", "cpu", "--outputs", str(outputs)]) == 0
    assert "resuming after step 9" in capsys.readouterr().err
    summary = record.read_summary()
    assert summary["status"] == "ok" and summary["resumed_at_steps"] == [9]
    assert summary["train_time_s"] > time_before_stop  # the time before the stop still counts

    assert cli.main(["run", str(path), "--device", "cpu", "--outputs", str(tmp_path / "reference")]) == 0
    assert max_curve_difference(_curves(tmp_path / "reference", "tiny"), _curves(outputs, "tiny")) <= 1e-6


class StopAfter:
    """A stop request (as SIGINT makes) that is on from its n-th read: the runner reads it once
    before each cell, the trainer once after each step, so ``StopAfter(n)`` stops after step n-1."""

    def __init__(self, n: int):
        self.n, self.reads = n, 0
        self.cause = "a test"

    @property
    def requested(self) -> bool:
        self.reads += 1
        return self.reads >= self.n


def test_truncated_checkpoint_resumes_from_the_previous_good_one(write_matrix, tmp_path):
    path = write_matrix(MATRIX.split("[matrix]")[0] + '[matrix]\nmodel = ["gpt1"]\noptimizer = ["adamw"]\n'
                        'dropout = [0.1]\n')
    manager = plugin_manager()
    registry = build_registry(manager)
    (cell,) = resolve_cells(load_matrix(path), registry)
    store = ResultStore(tmp_path / "outputs", "tiny")
    lines: list[str] = []
    run = lambda stop=None: run_cells([cell], registry=registry, hooks=manager.hook, store=store,  # noqa: E731
                                      device=torch.device("cpu"), stop=stop, say=lines.append)

    assert run(StopAfter(18)).interrupted  # best (epoch 1, step 10) and latest (step 17) on disk
    checkpoints = CheckpointStore(store.cell(cell.id).path / CHECKPOINT_DIR, cell.id)
    index = json.loads(checkpoints.index_path.read_text())
    assert (index["best"]["step"], index["latest"]["step"]) == (10, 17)
    latest = checkpoints.directory / index["latest"]["file"]
    latest.write_bytes(latest.read_bytes()[:1000])  # a torn write the atomic rename should prevent

    outcome = run()
    assert outcome.finished == [cell.name]
    text = "\n".join(lines)
    assert "is truncated or corrupt" in text and "resuming from the best checkpoint (step 10)" in text
    assert store.cell(cell.id).read_summary()["resumed_at_steps"] == [10]

    assert cli.main(["run", str(path), "--device", "cpu", "--outputs", str(tmp_path / "reference")]) == 0
    assert max_curve_difference(_curves(tmp_path / "reference", "tiny"), _curves(tmp_path / "outputs", "tiny")) <= 1e-6


def _same_state(a, b, where: str = "") -> None:
    """Tensor for tensor and number for number, leaving out the wall-clock figures."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        keys = {k for k in a if k not in ("clocks", "step_times") and not str(k).endswith("_time_s")}
        assert keys == {k for k in b if k not in ("clocks", "step_times") and not str(k).endswith("_time_s")}, where
        for key in keys:
            _same_state(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same_state(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def test_an_async_checkpoint_resumes_exactly_as_a_sync_one(write_matrix, tmp_path):
    """Stopped after the same step (several background saves in), the async run's checkpoint holds the
    sync run's state tensor for tensor, and both resumed runs end on the same numbers, bit for bit."""
    import threading

    matrix = MATRIX.split("[matrix]")[0] + '[matrix]\nmodel = ["gpt1"]\noptimizer = ["adamw"]\ndropout = [0.1]\n'
    manager = plugin_manager()
    registry = build_registry(manager)
    states, curves = {}, {}
    for background in (False, True):
        (cell,) = resolve_cells(load_matrix(write_matrix(with_async(matrix, background))), registry)
        store = ResultStore(tmp_path / f"async={background}", "tiny")
        run = functools.partial(run_cells, [cell], registry=registry, hooks=manager.hook, store=store,
                                device=torch.device("cpu"), say=lambda line: None)
        assert run(stop=StopAfter(16)).interrupted  # after step 15: saves at 3, 6, 9, 10 (epoch end), 12, 15
        # The trainer waited for its writer before reporting the stop, so the file is whole and indexed.
        assert not any(t.name == "bench-checkpoint-writer" for t in threading.enumerate())
        states[background] = CheckpointStore(store.cell(cell.id).path / CHECKPOINT_DIR, cell.id).load().state
        assert states[background]["step"] == 15
        assert run().finished == [cell.name]
        curves[background] = _curves(tmp_path / f"async={background}", "tiny")
    _same_state(states[False], states[True])
    assert max_curve_difference(curves[False], curves[True]) == 0.0


def test_a_token_files_cell_killed_mid_training_resumes_bitwise(write_matrix, tmp_path, runner, capsys):
    """Shards read in place (three llm.c train shards, held-out valid/test): SIGKILL in the middle
    of an epoch, resume, and the loss curve is the uninterrupted one to the last bit."""
    import numpy as np

    from bench_plugins.token_files import write_llmc_shard

    ids = np.random.default_rng(0).integers(0, 16, 9000)
    for i, part in enumerate(np.array_split(ids, 3)):
        write_llmc_shard(tmp_path / f"train_{i:06d}.bin", part)
    shards = TINY_DEFAULTS.replace('dataset = "synthetic"', f"""dataset = "token-files"
train = "{tmp_path}/train_*.bin"
holdout_fraction = 0.05""").replace("train_tokens = 4000\nvalid_tokens = 600\ntest_tokens = 600\n", "")
    shards = shards.replace("log_every = 5", "log_every = 1")
    matrix = shards + "checkpoint_every = 3\nn_layer = 1\n\n[matrix]\nmodel = [\"lstm\"]\noptimizer = [\"adamw\"]\n"
    assert cli.main(["run", str(write_matrix(matrix, "reference")), "--device", "cpu",
                     "--outputs", str(tmp_path / "reference")]) == 0
    path = write_matrix(matrix)
    process = runner(path, tmp_path / "killed", "batch", 14)  # in epoch 2, after the step-12 checkpoint
    _, err = process.communicate(timeout=120)
    assert process.returncode == -signal.SIGKILL, err
    capsys.readouterr()
    assert cli.main(["run", str(path), "--device", "cpu", "--outputs", str(tmp_path / "killed")]) == 0  # the rerun
    assert "resuming after step 12" in capsys.readouterr().err
    reference, resumed = _curves(tmp_path / "reference", "reference"), _curves(tmp_path / "killed", "tiny")
    assert max_curve_difference(reference, resumed) == 0.0
