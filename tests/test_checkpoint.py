"""The checkpoint store: atomic files, best + latest only, verified loads, fallbacks."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from bench import rng
from bench.checkpoint import INDEX, CheckpointStore


def _state(step: int) -> dict:
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "rng": rng.capture(),
            "loop": {"step": step, "rows": [{"kind": "log", "step": step, "train_loss": 1.0 / step}]}}


@pytest.fixture
def store(tmp_path):
    warnings: list[str] = []
    checkpoints = CheckpointStore(tmp_path / "checkpoints", "cell123", warn=warnings.append)
    checkpoints.warnings = warnings
    return checkpoints


def _index(store) -> dict:
    return json.loads(store.index_path.read_text())


def test_round_trip_loads_with_weights_only(store):
    saved = _state(3)
    path = store.save(saved, step=3, best=True)
    # The file is an ordinary torch.save archive that the safe unpickler accepts.
    plain = torch.load(path, weights_only=True)
    assert plain["step"] == 3 and plain["cell_id"] == "cell123"
    restored = store.load()
    assert restored.source == "latest" and restored.best is restored.state
    for key, tensor in saved["model"].items():
        assert torch.equal(restored.state["model"][key], tensor)
    assert restored.state["loop"] == saved["loop"]
    assert store.warnings == []


def test_only_best_and_latest_are_kept(store):
    store.save(_state(1), step=1, best=True)
    store.save(_state(2), step=2, best=False)
    store.save(_state(3), step=3, best=False)
    index = _index(store)
    assert index["best"]["step"] == 1 and index["latest"]["step"] == 3
    assert sorted(p.name for p in store.directory.iterdir()) == sorted(
        [INDEX, index["best"]["file"], index["latest"]["file"]])
    store.save(_state(4), step=4, best=True)
    assert [p.name for p in store.files()] == [_index(store)["latest"]["file"]]
    restored = store.load()
    assert restored.state["step"] == 4 and restored.best is restored.state


def test_leftovers_of_a_killed_write_are_removed(store):
    store.save(_state(1), step=1, best=True)
    (store.directory / ".step-00000002.abc.tmp").write_bytes(b"half a checkpoint")
    (store.directory / "step-00000002-deadbeef.pt").write_bytes(b"renamed but never indexed")
    assert store.load().state["step"] == 1  # the index still names step 1
    store.save(_state(3), step=3, best=False)
    names = {p.name for p in store.directory.iterdir()}
    assert not any("00000002" in n for n in names)


def test_a_linked_checkpoints_folder_loses_only_the_files_bench_wrote(tmp_path):
    """Issue 18: a symlinked checkpoints/ made bench delete every file in the link's target that the
    index did not name."""
    target = tmp_path / "elsewhere"
    (target / "notes").mkdir(parents=True)
    (target / "precious.txt").write_text("keep me")
    (target / "notes" / "draft.md").write_text("keep me too")
    (target / "step-1.pt").write_bytes(b"not a name bench gives its states")
    cell = tmp_path / "cell"
    cell.mkdir()
    (cell / "checkpoints").symlink_to(target, target_is_directory=True)
    store = CheckpointStore(cell / "checkpoints", "cell123", warn=lambda line: None)
    for step in (1, 2, 3):
        store.save(_state(step), step=step, best=step == 1)
    assert store.load().state["step"] == 3
    assert len(store.files()) == 3  # best, latest, and the user's step-1.pt
    store.clear()
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*")) == [
        "notes", "notes/draft.md", "precious.txt", "step-1.pt"]
    assert (cell / "checkpoints").is_symlink()  # the link stays: the user made it


def test_a_run_with_a_linked_checkpoints_folder_keeps_the_target_s_files(tmp_path, write_matrix, capsys):
    from bench import cli
    from bench.cells import resolve_cells
    from bench.matrix import load_matrix
    from bench.registry import load_plugins
    from tests.conftest import TINY_DEFAULTS

    matrix = write_matrix(TINY_DEFAULTS + 'model = "lstm"\noptimizer = "sgd"\nn_layer = 1\ncheckpoint_every = 3\n')
    (cell,) = resolve_cells(load_matrix(matrix), load_plugins().registry)
    target = tmp_path / "big-disk"
    target.mkdir()
    (target / "precious.txt").write_text("keep me")
    folder = tmp_path / "out" / "tiny" / cell.id
    folder.mkdir(parents=True)
    (folder / "checkpoints").symlink_to(target, target_is_directory=True)
    for extra in ([], ["--force"]):
        assert cli.main(["run", str(matrix), "--device", "cpu", "--outputs", str(tmp_path / "out"), *extra]) == 0
        assert [p.name for p in target.iterdir()] == ["precious.txt"]
    assert "1 trained" in capsys.readouterr().err


def test_truncated_latest_falls_back_to_best_with_a_warning(store):
    store.save(_state(1), step=1, best=True)
    latest = store.save(_state(2), step=2, best=False)
    data = latest.read_bytes()
    latest.write_bytes(data[: len(data) // 2])
    restored = store.load()
    assert restored.source == "best" and restored.state["step"] == 1
    assert any("truncated or corrupt" in w for w in store.warnings)
    assert any("best checkpoint (step 1)" in w for w in store.warnings)
    # The bad file is dropped, so the next load is quiet and resumes from the same place.
    store.warnings.clear()
    assert store.load().state["step"] == 1 and store.warnings == []
    assert not latest.exists()


def test_flipped_byte_is_detected_even_when_the_length_is_right(store):
    path = store.save(_state(5), step=5, best=True)
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0xFF
    path.write_bytes(bytes(data))
    assert store.load() is None
    assert any("SHA-256" in w for w in store.warnings)
    assert not store.directory.exists()  # nothing readable: the cell starts from scratch


def test_unreadable_best_means_scratch_not_a_best_epoch_without_weights(store):
    best = store.save(_state(1), step=1, best=True)
    store.save(_state(2), step=2, best=False)
    best.write_bytes(b"")
    assert store.load() is None
    assert any("best checkpoint is unreadable" in w for w in store.warnings)


def test_missing_or_torn_index(store):
    assert store.load() is None and store.warnings == []  # a cell that never checkpointed
    store.save(_state(1), step=1, best=True)
    store.index_path.write_text("{not json")
    assert store.load() is None
    assert any("missing or unreadable" in w for w in store.warnings)


def test_a_checkpoint_of_another_cell_is_refused(store, tmp_path):
    other = CheckpointStore(store.directory, "other-cell", warn=store.warnings.append)
    other.save(_state(1), step=1, best=True)
    assert store.load() is None
    assert any("another cell" in w for w in store.warnings)


def test_a_pickled_object_is_not_executed(store):
    class Payload:
        def __reduce__(self):
            return (print, ("code ran during load",))

    store.save(_state(1), step=1, best=True)  # the first save is read back; later ones are not
    store.save({"model": {}, "evil": Payload()}, step=2, best=True)
    assert store.load() is None
    assert any("cannot be loaded" in w for w in store.warnings)


def test_rng_states_round_trip():
    torch.manual_seed(1)
    random.seed(2)
    np.random.seed(3)
    state = rng.capture()
    expected = (random.random(), float(np.random.rand()), torch.rand(3))
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    rng.restore(state)
    again = (random.random(), float(np.random.rand()), torch.rand(3))
    assert expected[:2] == again[:2] and torch.equal(expected[2], again[2])


# -- fault 9: a state that weights_only cannot load is caught at the first save -------------------

class NumpyStateSGD(torch.optim.SGD):
    """An optimizer (as a plugin might write it) that keeps a numpy scalar in its state."""

    @torch.no_grad()
    def step(self, closure=None):
        super().step(closure)
        for group in self.param_groups:
            for p in group["params"]:
                self.state[p]["scale"] = np.float64(0.5)


def test_an_unloadable_state_turns_checkpoints_off_at_the_first_save(store):
    model = torch.nn.Linear(2, 2)
    optimizer = NumpyStateSGD(model.parameters(), lr=0.1)
    model(torch.randn(1, 2)).sum().backward()
    optimizer.step()
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
    assert store.save(state, step=1, best=True) is None
    assert store.warnings == [
        "warning: checkpoints of this cell are turned off: its training state holds a numpy.float64 "
        "(at optimizer.state.0.scale) that torch.load(weights_only=True) refuses, so no checkpoint could "
        "ever be resumed; training goes on without them (keep optimizer state in tensors or Python numbers)"]
    assert not store.directory.exists()
    assert store.save(state, step=2, best=True) is None and len(store.warnings) == 1
    assert store.load() is None


def test_a_cell_with_such_an_optimizer_finishes_without_checkpoints(tmp_path, write_matrix, monkeypatch, capsys):
    from bench import cli, commands
    from bench.components import Component
    from bench.hookspecs import hookimpl
    from bench.registry import load_plugins
    from bench.store import ResultStore
    from tests.conftest import TINY_DEFAULTS

    class Plugin:
        @hookimpl
        def bench_optimizers(self):
            return [Component("numpy-sgd", lambda params, *, lr, device_type: NumpyStateSGD(params, lr=lr), {})]

    monkeypatch.setattr(commands, "load_plugins", lambda selection=None: load_plugins(selection, [Plugin()]))
    matrix = write_matrix(TINY_DEFAULTS + 'model = "lstm"\noptimizer = "numpy-sgd"\nn_layer = 1\n'
                          'checkpoint_every = 3\n')
    assert cli.main(["run", str(matrix), "--device", "cpu", "--outputs", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert err.count("checkpoints of this cell are turned off") == 1
    (record,) = ResultStore(tmp_path / "out", "tiny").records()
    assert record.read_summary()["status"] == "ok" and not (record.path / "checkpoints").exists()


# -- hashing while writing, asynchronous saves -------------------------------------------------

def test_the_recorded_digest_is_of_the_bytes_on_disk(store):
    from bench.fileio import sha256_file

    store.save(_state(1), step=1, best=True)
    path = store.save(_state(2), step=2, best=False)
    assert _index(store)["latest"]["sha256"] == sha256_file(path)
    assert path.name == f"step-00000002-{sha256_file(path)[:16]}.pt"


def _tied_state(step: int) -> dict:
    """A state whose two keys hold one tensor, as tied embedding and output weights do."""
    state = _state(step)
    weight = state["model"]["weight"]
    state["model"]["head.weight"] = weight.detach()
    return state


def test_an_async_save_writes_the_bytes_a_sync_save_writes(tmp_path):
    sync = CheckpointStore(tmp_path / "sync", "cell123")
    background = CheckpointStore(tmp_path / "async", "cell123", asynchronous=True)
    torch.manual_seed(0)
    first, second = _tied_state(1), _tied_state(2)
    torch.manual_seed(0)
    twin_first, twin_second = _tied_state(1), _tied_state(2)  # the same states, built again
    assert background.save(first, step=1, best=True) is not None  # the first save is read back, so synchronous
    assert background.save(second, step=2, best=False) is None
    for tensor in second["model"].values():
        tensor.add_(1.0)  # training goes on changing the originals while the copy is written
    written = background.wait()
    sync.save(twin_first, step=1, best=True)
    assert written.read_bytes() == sync.save(twin_second, step=2, best=False).read_bytes()
    restored = background.load().state["model"]
    assert all(torch.equal(restored[k], v) for k, v in twin_second["model"].items())
    # The tied pair is stored once and comes back as one tensor, as the original state would.
    assert restored["weight"].data_ptr() == restored["head.weight"].data_ptr()


def test_never_two_writes_in_flight_and_files_appear_in_step_order(tmp_path, monkeypatch):
    import threading
    import time

    import bench.checkpoint

    store = CheckpointStore(tmp_path / "checkpoints", "cell123", asynchronous=True)
    active, most, lock, real_save = [0], [0], threading.Lock(), torch.save

    def slow_save(obj, f):  # a slow disk, around the real write
        with lock:
            active[0] += 1
            most[0] = max(most[0], active[0])
        time.sleep(0.05)
        real_save(obj, f)
        with lock:
            active[0] -= 1

    monkeypatch.setattr(bench.checkpoint.torch, "save", slow_save)
    for step in range(1, 6):
        store.save(_state(step), step=step, best=step == 1)
        assert store.wait() is None or step > 1  # wait() hands back the file of the write it waited for
    assert most[0] == 1
    for step in range(6, 9):
        store.save(_state(step), step=step, best=False)
    assert store.wait().name.startswith("step-00000008-") and most[0] == 1
    assert (_index(store)["best"]["step"], _index(store)["latest"]["step"]) == (1, 8)


def test_a_failed_background_write_is_raised_by_the_next_save_and_never_indexed(tmp_path, monkeypatch):
    import bench.checkpoint

    store = CheckpointStore(tmp_path / "checkpoints", "cell123", asynchronous=True)
    store.save(_state(1), step=1, best=True)
    real_save, calls = torch.save, []

    def full_disk_once(obj, f):
        calls.append(obj["step"])
        if len(calls) == 1:
            raise OSError(28, "No space left on device")
        real_save(obj, f)

    monkeypatch.setattr(bench.checkpoint.torch, "save", full_disk_once)
    assert store.save(_state(2), step=2, best=False) is None  # the error happens in the thread
    with pytest.raises(OSError, match="No space left"):
        store.save(_state(3), step=3, best=False)
    # The failed write left no temp file and the index still names the last complete state.
    assert sorted(p.name for p in store.directory.iterdir()) == sorted([INDEX, _index(store)["latest"]["file"]])
    assert store.load().state["step"] == 1
    store.save(_state(4), step=4, best=False)
    assert store.load().state["step"] == 4 and calls == [2, 4]  # step 3 was refused, not written


def test_the_copier_refills_the_previous_copy_s_memory_and_keeps_sharing():
    from bench.checkpoint import StateCopier

    copier, state = StateCopier(), _tied_state(1)
    first = copier.copy(state)
    pointers = {k: v.data_ptr() for k, v in first["model"].items()}
    assert first["model"]["weight"] is not state["model"]["weight"]
    assert first["model"]["weight"].data_ptr() == first["model"]["head.weight"].data_ptr()  # still tied
    assert type(first["model"]) is type(state["model"]) and first["model"]._metadata == state["model"]._metadata
    for tensor in state["model"].values():
        tensor.add_(1.0)
    second = copier.copy(state)
    assert {k: v.data_ptr() for k, v in second["model"].items()} == pointers  # no fresh memory
    assert all(torch.equal(second["model"][k], v) for k, v in state["model"].items())
    assert second["loop"] == state["loop"] and second["loop"] is not state["loop"]
