"""File IO every part of bench shares: atomic writes, file checksums, sweeping orphan temp files.

An atomic write goes to a temp file beside the target (same filesystem, so the rename is
atomic), is flushed and fsynced, gets the permissions any new file gets under the umask (not
mkstemp's private 0600), and is renamed over the target. A reader, or a run killed at any
moment, sees the old complete file or the new complete one, never a torn one.

A write killed before its rename leaves its temp file behind: ``.<target>.<8 random>.tmp``
(``.part`` for downloads). :func:`sweep_temp_files` removes those, and only those: a file
whose name does not follow bench's own pattern is never touched.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Iterator

TEMP_SUFFIX = ".tmp"
DOWNLOAD_SUFFIX = ".part"
CORRUPT_SUFFIX = ".corrupt"
# mkstemp names a temp file prefix + 8 characters of [a-z0-9_] + suffix; bench's prefix is ".<target>.".
_TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.(tmp|part)$")
# A temp file written to within this many seconds may belong to a live writer in another process.
SWEEP_MIN_AGE_S = 60.0
_CHUNK = 1 << 20
PROCESS_STARTED = time.time()  # temp files newer than this may be this process's own writes in flight


def _file_mode_from_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


FILE_MODE = _file_mode_from_umask()


@dataclass
class PendingFile:
    """A write in progress: write to ``handle``; ``target`` may still be changed before the block ends."""

    handle: BinaryIO
    temp: Path
    target: Path


@contextmanager
def atomic_open(target: Path, *, suffix: str = TEMP_SUFFIX) -> Iterator[PendingFile]:
    """Open a temp file beside ``target``; on a clean exit fsync it and rename it to ``pending.target``.

    On any exception (KeyboardInterrupt included) the temp file is removed and the old target
    stays as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as handle:
            pending = PendingFile(handle, Path(temp), target)
            yield pending
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, pending.target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes | memoryview) -> None:
    """Write ``data`` to ``path`` so readers see either the old file or the complete new one."""
    with atomic_open(Path(path)) as pending:
        pending.handle.write(data)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


class HashingWriter:
    """A binary handle that feeds a SHA-256 with every byte it passes on to ``handle``.

    Writers that only ever append (``torch.save`` to a file object does) thus get the digest of
    the file they wrote without reading it back. ``seek`` is deliberately missing: a writer that
    rewound would make the digest differ from the bytes on disk, so it fails loudly instead.
    """

    def __init__(self, handle: BinaryIO):
        self.handle = handle
        self._digest = hashlib.sha256()

    def write(self, data: bytes | bytearray | memoryview) -> int:
        written = self.handle.write(data)
        self._digest.update(data)  # a buffered handle takes every byte, so written == len(data)
        return written

    def flush(self) -> None:
        self.handle.flush()

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks so a large file never sits in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(path: Path) -> dict[str, Any]:
    """``{"bytes": size, "sha256": hex}`` of a file, as recorded for later verification."""
    return {"bytes": Path(path).stat().st_size, "sha256": sha256_file(path)}


def fingerprint_mismatch(path: Path, recorded: dict[str, Any]) -> str | None:
    """Why ``path`` differs from its recorded fingerprint (missing, other size, other SHA-256), or None."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return "missing"
    if size != recorded.get("bytes"):
        return f"{size} bytes, {recorded.get('bytes')} recorded"
    if sha256_file(path) != recorded.get("sha256"):
        return "same size, different SHA-256"
    return None


def move_aside(path: Path) -> Path:
    """Rename a damaged file to ``<name>.corrupt`` (kept for inspection, no longer read)."""
    aside = path.with_name(path.name + CORRUPT_SUFFIX)
    os.replace(path, aside)
    return aside


def fsync_directory(path: Path) -> None:
    """Make renames inside ``path`` durable; a filesystem that cannot fsync a directory is skipped."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def is_temp_name(name: str) -> bool:
    return bool(_TEMP_NAME.match(name))


def sweep_temp_files(*directories: Path, older_than: float | None = None) -> list[Path]:
    """Delete bench's orphan temp files under ``directories`` (recursively); return what was removed.

    Only files named like bench's temp files and last written before ``older_than`` (default:
    before this process started and at least :data:`SWEEP_MIN_AGE_S` ago) are removed, so a
    write in flight, here or in another process, is never swept away.
    """
    cutoff = older_than if older_than is not None else min(PROCESS_STARTED, time.time() - SWEEP_MIN_AGE_S)
    removed = []
    for directory in directories:
        if not Path(directory).is_dir():
            continue
        for root, _, names in os.walk(directory):
            for name in names:
                path = Path(root) / name
                try:
                    if is_temp_name(name) and path.is_file() and path.stat().st_mtime < cutoff:
                        path.unlink()
                        removed.append(path)
                except FileNotFoundError:
                    pass  # renamed or removed by its writer meanwhile
    return removed
