"""The per-matrix run lock: refuses a live holder, takes over a dead one's file."""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys

import pytest

from bench.errors import BenchError
from bench.lock import LOCK_FILE, LockedError, MatrixLock


def test_lock_records_the_holder_and_refuses_a_second_one(tmp_path):
    folder = tmp_path / "outputs" / "tiny"
    with MatrixLock(folder) as lock:
        owner = json.loads(lock.path.read_text())
        assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
        # A second open file description conflicts with the first, even within one process.
        with pytest.raises(LockedError, match=rf"in use by another `bench run` \(pid {os.getpid()} on host"):
            MatrixLock(folder).acquire()
    assert not (folder / LOCK_FILE).exists()
    with MatrixLock(folder):  # released: free again
        pass


def test_locked_error_is_a_user_error():
    assert issubclass(LockedError, BenchError)  # the CLI prints one line and exits 2


def test_a_lock_held_by_another_process_is_refused(tmp_path):
    folder = tmp_path / "m"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom bench.lock import MatrixLock\n"
         f"lock = MatrixLock({str(folder)!r}); lock.acquire(); print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockedError, match=f"pid {holder.pid}"):
            MatrixLock(folder).acquire()
    finally:
        holder.kill()
        holder.wait()
    # The kernel dropped the dead holder's flock; its file is stale and is taken over.
    messages: list[str] = []
    with MatrixLock(folder, say=messages.append) as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert len(messages) == 1 and "stale lock" in messages[0] and f"pid {holder.pid}" in messages[0]


def test_release_is_idempotent_and_keeps_a_successor_file(tmp_path):
    lock = MatrixLock(tmp_path)
    lock.acquire()
    lock.release()
    lock.release()
    successor = MatrixLock(tmp_path)
    successor.acquire()
    lock.release()  # must not delete the successor's file
    assert successor.path.exists()
    successor.release()


def test_a_lock_file_that_is_a_directory_is_one_clear_error(tmp_path):
    (tmp_path / LOCK_FILE).mkdir()
    with pytest.raises(BenchError, match=r"the lock file '.*\.lock' is a directory; remove it"):
        MatrixLock(tmp_path).acquire()


def test_an_unwritable_results_folder_is_one_clear_error(tmp_path, monkeypatch):
    # Root ignores permission bits, so the refusal a read-only folder gives is injected.
    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
    monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(BenchError, match="cannot write results in .*: Permission denied; make it writable or "
                                         "choose another folder with --outputs"):
        MatrixLock(tmp_path / "m").acquire()
