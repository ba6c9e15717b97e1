"""Training checkpoints of one cell: written atomically, verified on load, two kept.

Layout under ``<cell>/checkpoints/``:

* ``step-00000040-<sha>.pt``: one whole training state written by ``torch.save``. It holds
  tensors, numbers, strings, lists and dicts only, so it is read with
  ``torch.load(..., weights_only=True)`` and loading never runs pickled code.
* ``index.json``: which file is ``latest`` and which is ``best`` (the state at the end of the
  epoch with the lowest validation loss so far), each with its step and SHA-256.

A save writes the state to a temp file, hashing the bytes as they go (no second read), renames it
into place, then replaces the index the same way, then deletes every file of its own that the index
does not name (older states, temp files of a killed write). It never deletes a file it did not name
itself, so ``checkpoints/`` may be a link to another disk holding other files. A kill between any
two of these leaves a complete index whose files all exist.

Durability costs three fsyncs per save, each one an ordering a power loss could otherwise break
(a killed process needs none of them: the page cache outlives it):

1. the state file's data, before its rename: otherwise the index could name a file whose
   name reached the disk before its bytes. It is the only fsync of any size (the whole state).
2. the index temp file's data, before its rename: otherwise the new name could land with no
   bytes behind it, an empty index, and the cell would start from scratch (a few hundred bytes).
3. the directory, after both renames and before any delete: otherwise the deletes of the old
   latest could reach the disk while the rename of the index that stopped naming it did not,
   bringing back an index that names a deleted file. One directory fsync covers both renames:
   the state file's rename needs no fsync of its own before the index's rename, because
   journaling filesystems (ext4, XFS) commit the renames of one directory in the order they
   were made, so no crash keeps the new index's name without the state file's.

Merging 1 and 2 would need one file for both, giving up the small index that every reader
(executors, sweeps) opens without touching the states. Measured on ext4, 2 and 3 cost about
0.2 ms each and 1 about 4 ms for a 5 MB state; see benchmarks/results/checkpoint_cost.md.

Every save is written by a thread of its own; a synchronous save waits for it at once. Freed in
the training thread, the serializer's large temporary buffers made glibc trim that thread's heap,
and the steps after each save faulted all their memory back in (see :meth:`CheckpointStore.save`).

**Asynchronous saves** (``checkpoint_async``): :meth:`CheckpointStore.save` copies the state to
the CPU (every tensor cloned, so training may change the originals at once; the copy's buffers
are reused save after save, see :class:`StateCopier`) and the thread writes the copy as above
while training goes on. A save first waits for the previous one, so two are never in
flight and files appear in step order. A write that failed raises its error from the next
``save``, ``wait``, ``load`` or ``clear``: never lost. The copy is taken at the same point a
synchronous save would write, so the file holds the same state and resuming from it is the
same. The first save of a cell stays synchronous (it is read back, see below).

Loading tries ``latest``, then ``best``. A file whose SHA-256 differs from the index (truncated,
damaged) or that torch cannot read is skipped with a warning. Falling back to ``best`` loses
no correctness: it is a full state (RNGs and sampler position included), so training replays
the same steps to the same numbers. With neither readable the cell starts from scratch. A third
``previous`` file would double the disk spent on a case that atomic writes already make rare.

The first save of a cell is read back with ``weights_only=True``. A state holding an object that
loader refuses (a plugin optimizer keeping a numpy scalar, say) could never be resumed, so the
store says so in one warning, deletes the file and turns checkpoints off for that cell: training
goes on and the result is kept, it just cannot resume after a kill. Failing the cell instead
would fail it again at the same point on every rerun, after the same wasted epoch.
"""

from __future__ import annotations

import copy
import json
import os
import re
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from bench.fileio import HashingWriter, atomic_open, atomic_write_json, fsync_directory, sha256_file

CHECKPOINT_DIR = "checkpoints"
INDEX = "index.json"
FORMAT = 1
# The names of the files a store writes: the only ones it ever deletes. ``checkpoints/`` may be a
# link to another disk, whose other files are not bench's to remove (issue 18).
_STATE_NAME = re.compile(r"^step-\d{8}-[0-9a-f]+\.pt$")


def written_by_bench(name: str) -> bool:
    """Whether ``name`` is a checkpoint state, the index, or a temp file of a write of either."""
    return (name == INDEX or bool(_STATE_NAME.match(name))
            or (name.startswith((".step-", f".{INDEX}.")) and name.endswith(".tmp")))


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass
class Restored:
    state: dict[str, Any]  # the training state that resumes
    best: dict[str, Any] | None  # the best state (the same object when latest is the best)
    source: str  # "latest" or "best"
    path: Path


class CheckpointStore:
    def __init__(self, directory: Path, cell_id: str, warn: Callable[[str], None] = _stderr, *,
                 asynchronous: bool = False):
        self.directory = Path(directory)
        self.cell_id = cell_id
        self.warn = warn
        self.asynchronous = asynchronous  # write saves from a background thread (see the module docstring)
        self.verified = False  # whether a save of this cell has been read back with weights_only
        self.disabled = False  # the state cannot be loaded with weights_only: saves do nothing
        self._pending: _BackgroundWrite | None = None
        self._copier = StateCopier()

    @property
    def index_path(self) -> Path:
        return self.directory / INDEX

    def save(self, state: dict[str, Any], *, step: int, best: bool) -> Path | None:
        """Write ``state`` as the latest checkpoint (and the best one when ``best``) and return its
        file; None when checkpoints are off for this cell or when a background thread writes it
        (:meth:`wait` returns that file)."""
        self.wait()  # never two writes in flight; a failed one raises here
        if self.disabled:
            return None
        if self.asynchronous and self.verified:
            snapshot = self._copier.copy(state)  # training changes the originals as soon as this returns
            self._pending = _BackgroundWrite(lambda: self._write(snapshot, step, best))
            return None
        # Written by a thread even when training waits for it: the serializer's large temporary
        # buffers then come from that thread's malloc arena, and freeing them cannot make glibc
        # trim the training thread's heap, after which the next steps fault all their activation
        # memory back in (measured for a 5 MB state: 7,000-20,000 more page faults and 25-35 ms
        # more training time per save; benchmarks/results/checkpoint_cost.md).
        self._pending = _BackgroundWrite(lambda: self._write(state, step, best))
        return self.wait()

    def wait(self) -> Path | None:
        """Block until a background save is on disk and return its file; raise its error if it failed."""
        pending = self._pending
        if pending is None:
            return None
        try:
            return pending.join()
        finally:
            if not pending.thread.is_alive():  # still pending if a KeyboardInterrupt cut the join short
                self._pending = None

    def _write(self, state: dict[str, Any], step: int, best: bool) -> Path | None:
        payload = {"format": FORMAT, "cell_id": self.cell_id, "step": step, **state}
        with atomic_open(self.directory / f"step-{step:08d}") as out:
            writer = HashingWriter(out.handle)
            torch.save(payload, writer)  # type: ignore[arg-type]  # torch only calls write()
            digest = writer.hexdigest()  # of the bytes on disk, which is what a load will check
            out.target = self.directory / f"step-{step:08d}-{digest[:16]}.pt"
        if not self.verified and not self._loadable(out.target, payload):
            return None
        entry = {"file": out.target.name, "step": step, "sha256": digest}
        previous = self._read_index() or {}
        self._write_index({"latest": entry, "best": entry if best else previous.get("best")})
        return out.target

    def _loadable(self, path: Path, payload: dict[str, Any]) -> bool:
        """Read the first checkpoint back as :meth:`load` will; on refusal warn, clean up, turn off."""
        try:
            torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as exc:  # noqa: BLE001 - the unpickler raises several types for this
            found = _foreign_object(payload)
            what = (f"a {found[1]} (at {found[0]})" if found
                    else f"an object ({type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]})")
            self.warn(f"warning: checkpoints of this cell are turned off: its training state holds {what} that "
                      "torch.load(weights_only=True) refuses, so no checkpoint could ever be resumed; training "
                      "goes on without them (keep optimizer state in tensors or Python numbers)")
            path.unlink(missing_ok=True)
            self._remove()  # not clear(): this runs in the writer thread, which cannot wait for itself
            self.disabled = True
            return False
        self.verified = True
        return True

    def load(self) -> Restored | None:
        """The newest readable state, or None (with a warning when something was unreadable)."""
        self.wait()
        index = self._read_index()
        if index is None:
            if self.directory.is_dir() and any(self.directory.glob("*.pt")):
                self.warn(f"warning: {self.index_path} is missing or unreadable; starting the cell from scratch")
                self.clear()
            return None
        latest, best = index.get("latest"), index.get("best")
        state = self._read(latest) if latest else None
        if state is not None and latest is not None:
            if best is None or best["file"] == latest["file"]:
                return Restored(state, state if best else None, "latest", self.directory / latest["file"])
            best_state = self._read(best)
            if best_state is not None:
                return Restored(state, best_state, "latest", self.directory / latest["file"])
            # Resuming without the best weights would report a best epoch it cannot evaluate.
            self.warn("warning: the best checkpoint is unreadable, so the cell starts from scratch")
            self.clear()
            return None
        if best is not None and (latest is None or best["file"] != latest["file"]):
            best_state = self._read(best)
            if best_state is not None:
                self.warn(f"warning: resuming from the best checkpoint (step {best['step']}) instead; "
                          "the steps after it are trained again")
                self._write_index({"latest": best, "best": best})
                return Restored(best_state, best_state, "best", self.directory / best["file"])
        self.warn("warning: no readable checkpoint left; the cell starts from scratch")
        self.clear()
        return None

    def clear(self) -> None:
        self.wait()  # a write still going would recreate the folder
        self._remove()

    def _remove(self) -> None:
        # The index goes first: a kill halfway through leaves unindexed files (removed by the
        # next save), never an index naming files that are gone. Only bench's files go; the folder
        # too once empty, unless it is a link (someone made it, to keep checkpoints elsewhere).
        self.index_path.unlink(missing_ok=True)
        self._delete_ours(keep=set())
        if self.directory.is_dir() and not self.directory.is_symlink():
            try:
                self.directory.rmdir()
            except OSError:
                pass  # holds files bench did not write: left as they are

    def files(self) -> list[Path]:
        return sorted(self.directory.glob("*.pt")) if self.directory.is_dir() else []

    # -- internals ----------------------------------------------------------------------------

    def _read(self, entry: dict[str, Any]) -> dict[str, Any] | None:
        path = self.directory / entry["file"]
        try:
            digest = sha256_file(path)
        except OSError as exc:
            self.warn(f"warning: checkpoint {path} cannot be read ({exc.strerror or exc})")
            return None
        if digest != entry["sha256"]:
            self.warn(f"warning: checkpoint {path} is truncated or corrupt "
                      f"({path.stat().st_size} bytes, SHA-256 differs from the one recorded at save time)")
            return None
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is skipped the same way
            self.warn(f"warning: checkpoint {path} cannot be loaded ({type(exc).__name__}: {exc})")
            return None
        if not isinstance(payload, dict) or payload.get("format") != FORMAT or payload.get("cell_id") != self.cell_id:
            self.warn(f"warning: checkpoint {path} belongs to another cell or format; ignoring it")
            return None
        return payload

    def _read_index(self) -> dict[str, Any] | None:
        try:
            index = json.loads(self.index_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            return None
        return index if isinstance(index, dict) else None

    def _write_index(self, index: dict[str, Any]) -> None:
        atomic_write_json(self.index_path, index)
        fsync_directory(self.directory)  # make both renames durable before deleting anything
        self._delete_ours(keep={INDEX} | {entry["file"] for entry in index.values() if entry})

    def _delete_ours(self, keep: set[str]) -> None:
        """Delete the files this store wrote (see :func:`written_by_bench`) except ``keep``."""
        try:
            names = os.listdir(self.directory)
        except (FileNotFoundError, NotADirectoryError):
            return
        for name in names:
            path = self.directory / name
            if name not in keep and written_by_bench(name) and not path.is_dir():
                path.unlink(missing_ok=True)


# What torch.load(weights_only=True) accepts besides containers; used only to name what it refused.
_SAFE_LEAVES = (torch.Tensor, int, float, bool, complex, str, bytes, type(None), torch.dtype, torch.device,
                torch.Size, torch.memory_format, torch.layout)


def _foreign_object(obj: Any, where: str = "") -> tuple[str, str] | None:
    """(path, type) of the first object in ``obj`` that is neither a container nor a safe leaf."""
    items: Iterable[tuple[Any, Any]]
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, (list, tuple)) and not isinstance(obj, torch.Size):
        items = enumerate(obj)
    elif type(obj) in _SAFE_LEAVES or isinstance(obj, torch.Tensor):
        return None
    else:
        return where or "the top level", f"{type(obj).__module__}.{type(obj).__qualname__}"
    for key, value in items:
        found = _foreign_object(value, f"{where}.{key}" if where else str(key))
        if found:
            return found
    return None


class _BackgroundWrite:
    """One save running in a thread of its own; :meth:`join` returns its file or raises its error."""

    def __init__(self, write: Callable[[], Path | None]):
        self.result: Path | None = None
        self.error: BaseException | None = None
        # Not a daemon: an interpreter exiting mid-write finishes the file rather than leaving a temp.
        self.thread = threading.Thread(target=self._run, args=(write,), name="bench-checkpoint-writer")
        self.thread.start()

    def _run(self, write: Callable[[], Path | None]) -> None:
        try:
            self.result = write()
        except BaseException as exc:  # noqa: BLE001 - handed to the training thread by join()
            self.error = exc

    def join(self) -> Path | None:
        self.thread.join()
        if self.error is not None:
            raise self.error
        return self.result


class StateCopier:
    """Deep copies of training states into CPU memory, for a background thread to write.

    Sharing is kept as ``torch.save`` sees it, so the file is byte for byte the one the original
    state gives: one tensor found twice is one copy found twice; two tensors viewing the same
    memory the same way (tied input and output embeddings) become two views of one copy.

    The buffers of one copy are refilled by the next (a state has the same tensors save after
    save): memory touched before skips the page faults of fresh memory, which were most of the
    copy's time (3.2 -> under 1 ms for 5 MB). So a copy's memory stays allocated between saves;
    the caller must be done with a copy before it asks for the next. Copies of CUDA tensors go to
    pinned memory.
    """

    def __init__(self) -> None:
        self._buffers: list[torch.Tensor] = []  # the previous copy's, in the order they were made
        self._spare: list[torch.Tensor] = []  # during a copy: the previous copy's buffers, refilled in order

    def copy(self, state: Any) -> Any:
        self._spare, self._buffers = self._buffers, []
        return self._copy(state, {})

    def _copy(self, obj: Any, copies: dict[Any, torch.Tensor]) -> Any:
        if isinstance(obj, torch.Tensor):
            if id(obj) not in copies:
                # Sparse tensors have no data pointer: they are only shared as the same object.
                key = ((obj.device, obj.data_ptr(), obj.dtype, tuple(obj.shape), obj.stride())
                       if obj.layout == torch.strided else id(obj))
                base = copies.get(key)
                copies[key] = copies[id(obj)] = self._tensor(obj) if base is None else base.view_as(base)
            return copies[id(obj)]
        if isinstance(obj, dict):
            # copy.copy keeps the class and attributes: a module's state_dict is an OrderedDict whose
            # _metadata load_state_dict reads, and torch.save writes both.
            copied = copy.copy(obj)
            for key, value in obj.items():
                copied[key] = self._copy(value, copies)
            return copied
        if isinstance(obj, list):
            return [self._copy(value, copies) for value in obj]
        if isinstance(obj, tuple) and not isinstance(obj, torch.Size):
            return tuple(self._copy(value, copies) for value in obj)
        return copy.deepcopy(obj)  # numbers and strings come back as they are

    def _tensor(self, tensor: torch.Tensor) -> torch.Tensor:
        if tensor.layout != torch.strided or not tensor.is_contiguous():  # rare in a state: copied afresh
            return tensor.detach().to("cpu", copy=True)
        index = len(self._buffers)
        spare = self._spare[index] if index < len(self._spare) else None
        if spare is None or spare.shape != tensor.shape or spare.dtype != tensor.dtype:
            spare = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=tensor.is_cuda)
        self._buffers.append(spare)
        return spare.copy_(tensor.detach())
