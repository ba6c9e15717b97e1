"""One `bench run` at a time per results folder (``outputs/<matrix>``).

The lock is the file ``outputs/<matrix>/.lock``, held with ``flock`` while the run lives. The
kernel releases an ``flock`` when its process dies, however it dies (SIGKILL, OOM killer), so a
dead run never blocks the next one. The file names its holder (pid, host, start time) for the
refusal message; a file still naming a process that no longer holds the lock is stale and is
taken over with a message. Where ``flock`` is unsupported the pid is checked instead.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Callable

from bench.errors import BenchError

LOCK_FILE = ".lock"


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class LockedError(BenchError):
    """Another live `bench run` holds the results folder."""


class UnwritableResults(BenchError):
    """The results folder (or the folder it would be made in) refuses writes."""


class MatrixLock:
    def __init__(self, folder: str | Path, say: Callable[[str], None] = _stderr):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.say = say
        self._fd: int | None = None

    @property
    def fd(self) -> int | None:
        """The open, locked file while held. A child process given this same open file (see
        :class:`bench.executors.worker.SharedFd`) keeps the lock held for as long as it lives."""
        return self._fd

    def __enter__(self) -> MatrixLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def acquire(self) -> None:
        while True:
            fd = self._open()
            try:
                held = _try_flock(fd)
            except BaseException:
                os.close(fd)
                raise
            owner = _read_owner(fd)
            if held is False or (held is None and owner and _alive_here(owner)):
                os.close(fd)
                raise LockedError(f"{self.folder} is in use by another `bench run` ({describe(owner)}); wait for "
                                  f"it to finish or stop it with `kill -TERM {(owner or {}).get('pid', 'PID')}` "
                                  f"(lock file: {self.path})")
            if _same_file(fd, self.path):
                break
            # The previous holder deleted the file between our open and our lock: lock the new one.
            os.close(fd)
        if owner and owner.get("pid") is not None:
            self.say(f"bench: taking over the stale lock {self.path} left by {describe(owner)}: "
                     "that run is no longer alive")
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                  "argv": sys.argv}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        os.fsync(fd)
        self._fd = fd

    def _open(self) -> int:
        """The lock file's descriptor; the first write into the results folder, so an unwritable
        folder is reported here, before anything else is attempted."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except IsADirectoryError:
            raise BenchError(f"the lock file {str(self.path)!r} is a directory; remove it (no run uses it) "
                             "and run again") from None
        except OSError as exc:
            raise UnwritableResults(f"cannot write results in {str(self.folder)!r}: {exc.strerror}; make it "
                                    "writable or choose another folder with --outputs") from None

    def release(self) -> None:
        if self._fd is None:
            return
        # Unlink while still holding the lock, so nobody can lock the file we are about to drop.
        try:
            if _same_file(self._fd, self.path):
                self.path.unlink()
        finally:
            os.close(self._fd)
            self._fd = None


def describe(owner: dict[str, Any] | None) -> str:
    if not owner:
        return "holder unknown"
    return f"pid {owner.get('pid')} on host {owner.get('host')}, started {owner.get('started')}"


def _try_flock(fd: int) -> bool | None:
    """True: locked. False: someone else holds it. None: this file system has no flock."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError as exc:
        if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            return None
        raise


def _read_owner(fd: int) -> dict[str, Any] | None:
    try:
        owner = json.loads(os.pread(fd, 65536, 0).decode() or "null")
    except (ValueError, UnicodeDecodeError):
        return None
    return owner if isinstance(owner, dict) else None


def _alive_here(owner: dict[str, Any]) -> bool:
    """Without flock: a holder on another host cannot be checked, so it counts as alive."""
    if owner.get("host") != socket.gethostname():
        return True
    pid = owner.get("pid")
    if not isinstance(pid, int) or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _same_file(fd: int, path: Path) -> bool:
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (on_disk.st_dev, on_disk.st_ino)
