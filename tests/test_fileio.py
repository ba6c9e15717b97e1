"""One module for file IO: atomic writes (fsync, umask permissions), SHA-256, sweeping temp files."""

from __future__ import annotations

import hashlib
import os
import stat
import time

import pytest

from bench import fileio
from bench.fileio import atomic_open, atomic_write_bytes, sha256_file, sweep_temp_files


def test_atomic_write_replaces_whole_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "cell" / "summary.json"
    atomic_write_bytes(target, b"old")
    atomic_write_bytes(target, b"new contents")
    assert target.read_bytes() == b"new contents"
    assert [p.name for p in target.parent.iterdir()] == ["summary.json"]


def test_the_bytes_are_fsynced_before_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(fileio.os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(fileio.os, "replace", lambda a, b: (events.append("rename"), real_replace(a, b))[1])
    atomic_write_bytes(tmp_path / "f.bin", b"data")
    assert events == ["fsync", "rename"]


def test_failed_write_keeps_the_old_file_and_removes_the_temp(tmp_path, monkeypatch):
    target = tmp_path / "summary.json"
    atomic_write_bytes(target, b"finished result")

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(fileio.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(target, b"half")
    assert target.read_bytes() == b"finished result"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_written_files_get_the_umask_permissions_not_the_temp_files_private_ones(tmp_path):
    target = tmp_path / "config.json"
    atomic_write_bytes(target, b"{}")
    assert stat.S_IMODE(os.stat(target).st_mode) == fileio.FILE_MODE
    mask = os.umask(0)
    os.umask(mask)
    assert fileio.FILE_MODE == 0o666 & ~mask


def test_atomic_open_can_choose_the_final_name_after_writing(tmp_path):
    with atomic_open(tmp_path / "pending") as out:
        out.handle.write(b"abc")
        out.handle.flush()
        out.target = tmp_path / f"named-{sha256_file(out.temp)[:8]}.bin"
    assert [p.name for p in tmp_path.iterdir()] == [f"named-{hashlib.sha256(b'abc').hexdigest()[:8]}.bin"]


def test_sha256_and_fingerprint_of_a_file_larger_than_one_block(tmp_path):
    data = os.urandom(3 * (1 << 20) + 17)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
    recorded = fileio.fingerprint(path)
    assert recorded == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert fileio.fingerprint_mismatch(path, recorded) is None
    path.write_bytes(data[:100])
    assert fileio.fingerprint_mismatch(path, recorded) == f"100 bytes, {len(data)} recorded"
    path.write_bytes(bytes(len(data)))
    assert fileio.fingerprint_mismatch(path, recorded) == "same size, different SHA-256"
    path.unlink()
    assert fileio.fingerprint_mismatch(path, recorded) == "missing"


def test_sweep_removes_only_old_temp_files_named_like_benchs_own(tmp_path):
    old = time.time() - 3600
    orphans = [tmp_path / ".summary.json.k2j_9xab.tmp", tmp_path / "ckpt" / ".step-00000040.abcdefgh.tmp",
               tmp_path / "tokens" / ".abc-gpt2.uint16.bin.0123abcd.part"]
    keep = [tmp_path / "notes.tmp", tmp_path / ".summary.json.short.tmp", tmp_path / "best.pt",
            tmp_path / "data.part", tmp_path / ".config.json.zzzzzzzz.tmp.bak"]
    for path in orphans + keep:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 10)
        os.utime(path, (old, old))
    in_flight = tmp_path / ".metrics.jsonl.abcd1234.tmp"  # written just now: maybe a live writer's
    in_flight.write_bytes(b"x")
    removed = sweep_temp_files(tmp_path, tmp_path / "absent")
    assert sorted(removed) == sorted(orphans)
    assert all(p.exists() for p in keep + [in_flight]) and not any(p.exists() for p in orphans)
    assert sweep_temp_files(tmp_path, older_than=time.time() + 1) == [in_flight]
