"""A cell's folder as bytes and back: how results and checkpoints travel between a driver and
workers that share no filesystem.

The driver packs the cell's folder (checkpoints included) into the task; the worker unpacks it
into a private scratch folder, trains there, and returns the folder packed again; the driver
writes it into ``outputs/`` with the same atomic writes as everywhere else.
"""

from __future__ import annotations

from pathlib import Path

from bench.checkpoint import INDEX
from bench.fileio import atomic_write_bytes, is_temp_name
from bench.store import SUMMARY

# Written last, in this order: a driver killed while unpacking leaves either the old summary with
# checkpoints that all exist, or the new summary (which decides what happens next).
_LAST = (INDEX, SUMMARY)


def _written_last(relative: str) -> tuple[int, str]:
    name = relative.rsplit("/", 1)[-1]
    return (_LAST.index(name) + 1 if name in _LAST else 0, relative)


def pack_folder(folder: Path) -> dict[str, bytes]:
    """Every complete file under ``folder`` by relative path (temp files of unfinished writes skipped)."""
    if not folder.is_dir():
        return {}
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in sorted(folder.rglob("*"))
            if path.is_file() and not is_temp_name(path.name)}


def unpack_into(folder: Path, files: dict[str, bytes]) -> None:
    """Make ``folder`` hold exactly ``files``: each written atomically, then the others removed."""
    for relative in sorted(files, key=_written_last):
        target = folder / relative
        if not target.is_file() or target.read_bytes() != files[relative]:
            atomic_write_bytes(target, files[relative])
    if not folder.is_dir():
        return
    stale = [p for p in folder.rglob("*") if p.is_file() and p.relative_to(folder).as_posix() not in files]
    for path in sorted(stale, key=lambda p: p.name != INDEX):  # an index never names a removed file
        path.unlink()
    for path in sorted(folder.rglob("*"), reverse=True):  # emptied folders, children first
        if path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
            path.rmdir()
