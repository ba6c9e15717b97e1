import json
import os
import stat

import pytest

from bench import store
from bench.store import CellRecord, ResultStore, atomic_write_bytes, matrix_names


def test_atomic_write_replaces_whole_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "cell" / "summary.json"
    atomic_write_bytes(target, b"old")
    atomic_write_bytes(target, b"new contents")
    assert target.read_bytes() == b"new contents"
    assert [p.name for p in target.parent.iterdir()] == ["summary.json"]


def test_failed_write_keeps_the_old_file_and_removes_the_temp(tmp_path, monkeypatch):
    target = tmp_path / "summary.json"
    atomic_write_bytes(target, b"finished result")

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(store.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(target, b"half")
    assert target.read_bytes() == b"finished result"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_written_files_get_the_umask_permissions_not_the_temp_files_private_ones(tmp_path):
    target = tmp_path / "config.json"
    atomic_write_bytes(target, b"{}")
    assert stat.S_IMODE(os.stat(target).st_mode) == store.FILE_MODE
    mask = os.umask(0)
    os.umask(mask)
    assert store.FILE_MODE == 0o666 & ~mask


def test_store_lists_cells_with_a_config_and_matrices_with_cells(tmp_path):
    results = ResultStore(tmp_path, "demo")
    finished = results.cell("aaaa")
    finished.write_config({"id": "aaaa"})
    finished.write_summary({"status": "ok", "best_val_ppl": 3.1})
    started = results.cell("bbbb")
    started.write_config({"id": "bbbb"})
    (results.path / "not-a-cell").mkdir()
    assert [r.path.name for r in results.records()] == ["aaaa", "bbbb"]
    assert results.summaries() == [{"status": "ok", "best_val_ppl": 3.1}]
    assert finished.is_complete and not started.is_complete
    assert matrix_names(tmp_path) == ["demo"]


def test_metrics_round_trip_as_json_lines(tmp_path):
    record = CellRecord(tmp_path / "cell")
    rows = [{"epoch": 1, "val_loss": 2.0}, {"epoch": 2, "val_loss": 1.5}]
    record.write_metrics(rows)
    assert record.read_metrics() == rows
    assert [json.loads(line) for line in (record.path / "metrics.jsonl").read_text().splitlines()] == rows
