"""Pool workers hold the driver's run lock: a new run cannot start while one of them lives."""

from __future__ import annotations

import multiprocessing
import os

import pytest

from bench.executors.worker import SharedFd, Slot
from bench.lock import LockedError, MatrixLock


def _hold(lock: SharedFd, conn) -> None:
    conn.send(os.fstat(lock.fd).st_ino)
    conn.recv()  # until the test lets go


def test_a_worker_keeps_the_run_lock_after_its_driver_let_go(tmp_path):
    driver = MatrixLock(tmp_path, say=lambda line: None)
    driver.acquire()
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    worker = context.Process(target=_hold, args=(SharedFd(driver.fd), theirs))
    worker.start()
    try:
        assert ours.poll(120), f"the worker never reported (exit code {worker.exitcode})"
        assert ours.recv() == os.stat(driver.path).st_ino  # the same open file, so the same flock
        os.close(driver.fd)  # the driver dies without cleaning up: only the worker holds the lock now
        driver._fd = None
        with pytest.raises(LockedError, match="in use by another `bench run`"):
            MatrixLock(tmp_path, say=lambda line: None).acquire()
    finally:
        ours.send(None)
        worker.join(30)
    rerun = MatrixLock(tmp_path, say=lambda line: None)
    rerun.acquire()  # the worker is gone: the lock is free again
    rerun.release()


def test_slots_say_where_they_run():
    assert Slot(0, {"CUDA_VISIBLE_DEVICES": "3"}).where == "GPU 3"
    assert Slot(1, {"CUDA_VISIBLE_DEVICES": ""}, threads=4).where == "4 CPU threads"
    assert Slot(1, {"CUDA_VISIBLE_DEVICES": ""}, threads=1).where == "1 CPU thread"
