"""The local pool: same results as a sequential run, a killed worker or driver loses nothing,
cores are split, progress is drawn, bad settings are one line."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from bench import cli
from bench.executors.local import plan_slots
from bench.executors.progress import ProgressBoard
from bench.store import ResultStore
from tests.executors.conftest import results

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc and uses PR_SET_PDEATHSIG")

# `bench run` whose workers (spawned: they import this script again as __mp_main__, so the trap
# is set in them too) hold still at their N-th batch. Only the first worker to get there pauses:
# it claims the pause by creating a file, then names itself in another and waits.
TRAP = textwrap.dedent("""
    import os, sys, time
    from bench.data.samplers import RandomBatchSampler

    folder, nth, calls = os.environ["TRAP_DIR"], int(os.environ["TRAP_AT"]), [0]
    real = RandomBatchSampler.next_batch

    def next_batch(self):
        calls[0] += 1
        if calls[0] == nth and os.environ.get("TRAP_WORKER"):
            try:
                os.close(os.open(os.path.join(folder, "claimed"), os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                return real(self)
            with open(os.path.join(folder, "paused.tmp"), "w") as handle:
                handle.write(str(os.getpid()))
            os.replace(os.path.join(folder, "paused.tmp"), os.path.join(folder, "paused"))
            while True:
                time.sleep(0.05)
        return real(self)

    RandomBatchSampler.next_batch = next_batch
    os.environ["TRAP_WORKER"] = "1"  # inherited by the spawned workers, not acted on by the driver

    if __name__ == "__main__":
        import bench.cli
        sys.exit(bench.cli.main(sys.argv[1:]))
""")


# A plugin (loaded with --plugin, in the driver and in every worker) logging each bench_run_end.
END_LOG = textwrap.dedent("""
    import json, os
    from bench.hookspecs import hookimpl

    @hookimpl
    def bench_run_end(cell, summary):
        with open(os.path.join(os.environ["TRAP_DIR"], "ends.jsonl"), "a") as handle:
            handle.write(json.dumps([os.getpid(), cell["name"], summary["status"]]) + "\\n")
""")


def _start_trapped(tmp_path: Path, matrix: Path, outputs: Path, at: int) -> subprocess.Popen:
    script = tmp_path / "trap_run.py"
    script.write_text(TRAP)
    (tmp_path / "end_log.py").write_text(END_LOG)
    env = {**os.environ, "TRAP_DIR": str(tmp_path), "TRAP_AT": str(at)}
    env.pop("TRAP_WORKER", None)
    return subprocess.Popen([sys.executable, str(script), "run", str(matrix), "--device", "cpu", "--jobs", "2",
                             "--outputs", str(outputs), "--plugin", "end_log"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env)


def _paused_pid(tmp_path: Path, process: subprocess.Popen, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while not (tmp_path / "paused").exists():
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, "no worker reached the trap"
        time.sleep(0.05)
    return int((tmp_path / "paused").read_text())


def _children(pid: int) -> set[int]:
    found = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found.update(int(c) for c in (task / "children").read_text().split())
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_two_jobs_give_the_sequential_results(matrix_file, reference, tmp_path, capsys):
    outputs = tmp_path / "outputs"
    assert cli.main(["run", str(matrix_file), "--device", "cpu", "--jobs", "2", "--outputs", str(outputs)]) == 0
    err = capsys.readouterr().err
    assert results(outputs) == reference  # every loss bitwise equal
    assert "started on 1 CPU thread" in err and "3 trained" in err


def test_sequential_and_two_jobs_are_bitwise_equal_at_the_same_thread_count(matrix_file, tmp_path, capsys):
    # gpt1's losses depend on torch's thread count (reductions split by thread): a sequential run on
    # 2 threads and workers on 1 each differed by ~1e-7. --threads gives every executor the same count.
    runs = {}
    for name, extra in (("sequential", []), ("jobs", ["--jobs", "2"])):
        outputs = tmp_path / name
        assert cli.main(["run", str(matrix_file), "--device", "cpu", "--outputs", str(outputs), "--threads", "2",
                         "--filter", "optimizer=adamw", *extra]) == 0
        runs[name] = results(outputs)
    assert "started on 2 CPU threads" in capsys.readouterr().err
    assert len(runs["jobs"]) == 2 and runs["jobs"] == runs["sequential"]  # gpt1 and lstm, every loss bitwise
    assert {cell["summary"]["torch_threads"] for cell in runs["jobs"].values()} == {2}
    assert torch.get_num_threads() == 1  # the in-process run put the caller's setting back


@linux_only
def test_sigkill_of_one_worker_marks_its_cell_and_the_rerun_resumes_it(matrix_file, reference, tmp_path, capsys):
    outputs = tmp_path / "outputs"
    run = _start_trapped(tmp_path, matrix_file, outputs, at=9)  # steps 1-8 done, a checkpoint at step 6
    os.kill(_paused_pid(tmp_path, run), signal.SIGKILL)
    _, err = run.communicate(timeout=180)
    assert run.returncode == 1, err  # the matrix finished; one cell did not
    statuses = {s["name"]: s for s in ResultStore(outputs, "pool").summaries()}
    lost = [s for s in statuses.values() if s["status"] == "interrupted"]
    assert len(lost) == 1 and "killed by SIGKILL" in lost[0]["reason"], err
    assert sum(s["status"] == "ok" for s in statuses.values()) == 2
    # Every cell's end reached the hooks: the lost one's from the driver, the others' from their workers.
    ends = [json.loads(line) for line in (tmp_path / "ends.jsonl").read_text().splitlines()]
    assert sorted((name, status) for _, name, status in ends) == sorted((s["name"], s["status"])
                                                                        for s in statuses.values())
    assert [pid for pid, _, status in ends if status == "interrupted"] == [run.pid]

    assert cli.main(["run", str(matrix_file), "--device", "cpu", "--outputs", str(outputs)]) == 0
    err = capsys.readouterr().err
    assert "2 already complete" in err and "resuming after step 6" in err
    assert results(outputs) == reference


@linux_only
def test_sigkill_of_the_driver_takes_its_workers_and_the_rerun_resumes(matrix_file, reference, tmp_path, capsys):
    outputs = tmp_path / "outputs"
    run = _start_trapped(tmp_path, matrix_file, outputs, at=9)
    paused = _paused_pid(tmp_path, run)
    workers = _children(run.pid)
    assert paused in workers
    run.kill()
    run.communicate(timeout=60)
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in workers):  # PR_SET_PDEATHSIG: the kernel kills them with the driver
        assert time.monotonic() < deadline, "workers outlived their driver"
        time.sleep(0.05)

    assert cli.main(["run", str(matrix_file), "--device", "cpu", "--outputs", str(outputs)]) == 0  # the lock is free
    assert "resuming after step 6" in capsys.readouterr().err
    assert results(outputs) == reference


def test_cpu_cores_are_split_between_workers(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    lines = []
    assert [s.threads for s in plan_slots(2, "cpu", lines.append)] == [4, 4]
    assert [s.threads for s in plan_slots(3, "cpu", lines.append)] == [2, 2, 2]
    assert len(plan_slots(12, "cpu", lines.append)) == 8 and "8 CPU core(s)" in lines[0]
    assert all(s.env["CUDA_VISIBLE_DEVICES"] == "" for s in plan_slots(2, "cpu", lines.append))


def test_progress_board_draws_every_running_cell_on_a_terminal_and_plain_lines_elsewhere():
    live = io.StringIO()
    board = ProgressBoard(live, live=True)
    board.start("[1/2] a", "GPU 0")
    board.start("[2/2] b", "GPU 1")
    board.update("[1/2] a", 10, 100, 2.5)
    assert live.getvalue().endswith("  [1/2] a: step 10/100 loss 2.5000\n  [2/2] b: starting on GPU 1\n")
    board.say("[2/2] b: done")
    assert live.getvalue().endswith("\x1b[2F\x1b[J[2/2] b: done\n\r\x1b[J  [1/2] a: step 10/100 loss 2.5000\n"
                                    "  [2/2] b: starting on GPU 1\n")

    plain = io.StringIO()
    board = ProgressBoard(plain, live=False)
    board.start("[1/2] a", "1 CPU thread")
    board.update("[1/2] a", 10, 100, 2.5)
    board.update("[1/2] a", 12, 100, 2.4)  # within plain_interval_s of the last line: not repeated
    assert "\x1b" not in plain.getvalue()
    assert plain.getvalue().splitlines() == ["[1/2] a: started on 1 CPU thread", "[1/2] a: step 10/100 loss 2.5000"]


@pytest.mark.parametrize("args, message", [
    (["--executor", "dask"], "unknown executor 'dask'"),
    (["--jobs", "0"], "jobs must be >= 1"),
])
def test_bad_executor_settings_are_one_line(matrix_file, tmp_path, capsys, args, message):
    assert cli.main(["run", str(matrix_file), "--outputs", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bench: error: ") and message in err and len(err.splitlines()) == 1


def test_executor_options_come_from_the_matrix(write_matrix, matrix_file, tmp_path, capsys):
    body = matrix_file.read_text()
    path = write_matrix(body.replace("name = 'pool'", "name = 'pool'\n[executor]\nname = \"local\"\nworkers = 2\n"))
    assert cli.main(["run", str(path), "--outputs", str(tmp_path)]) == 2
    assert "executor 'local' has no option 'workers' (its options: jobs, threads)" in capsys.readouterr().err


def test_a_missing_ray_is_one_line(matrix_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets where it is not installed
    assert cli.main(["run", str(matrix_file), "--outputs", str(tmp_path), "--executor", "ray"]) == 2
    err = capsys.readouterr().err
    assert "--executor ray needs Ray" in err and "pip install 'bench-lm[ray]'" in err and len(err.splitlines()) == 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2, reason="needs 2 CUDA devices")
def test_each_worker_owns_one_gpu_and_nvml_finds_its_process_there(matrix_file, tmp_path, capsys):
    outputs = tmp_path / "outputs"
    assert cli.main(["run", str(matrix_file), "--device", "cuda", "--jobs", "2", "--outputs", str(outputs)]) == 0
    err = capsys.readouterr().err
    assert "started on GPU 0" in err and "started on GPU 1" in err
    for summary in ResultStore(outputs, "pool").summaries():
        # The worker's PID is found in the compute-process list of the device it trained on: the
        # figure is its own process on its own GPU, not another worker's or the whole device's.
        assert "matched by UUID" in summary["memory"]["sources"]["nvml"]
        assert summary["memory"]["nvml_process_peak_bytes"] > 0


def test_a_worker_killed_after_its_cell_finished_keeps_the_result_and_says_so(tmp_path):
    """Issue 18: it printed "worker died at step 60; rerun to resume" for a cell already counted as trained."""
    import multiprocessing

    from bench.cells import Cell
    from bench.executors.local import Pool, Worker
    from bench.registry import load_plugins
    from bench.runner import RunSpec, Session

    spec = RunSpec(str(tmp_path / "out"), "pool", "cpu")
    cell = Cell("c0ffee", "lstm-L1-sgd", {"model": "lstm"})
    finished = {"id": cell.id, "name": cell.name, "status": "ok", "best_val_loss": 2.5}
    ResultStore(spec.outputs, spec.matrix).cell(cell.id).write_summary(finished)
    process = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(60,))
    process.start()
    process.kill()  # between writing its summary and reporting "done"
    process.join()
    lines: list[str] = []
    pool = Pool([], spec, None)
    pool.session = Session(load_plugins().registry, load_plugins().hooks, say=lines.append)
    pool.board = ProgressBoard(live=False, plain=lines.append)
    outcome = pool._lost(Worker(slot=None, process=process, conn=None, cell=cell, step=60, total=60))
    assert outcome.status == "ok" and outcome.summary["best_val_loss"] == 2.5
    assert lines[-1] == (f"lstm-L1-sgd: worker process {process.pid} died (killed by SIGKILL) after the cell had "
                         "finished (ok); its result is kept")
    assert not any("rerun to resume" in line for line in lines)
