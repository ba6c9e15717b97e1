"""Data-directory resolution, missing-file errors and verified downloads (file:// URLs, no network)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from bench.data import datadir
from bench.data.datadir import ChecksumError, cache_dir, data_dir, locate
from bench.errors import DataMissingError

FILES = ["wikitext-2/train.txt", "wikitext-2/valid.txt", "wikitext-2/test.txt"]


@pytest.fixture
def env(tmp_path, monkeypatch):
    """Every location bench may touch points into tmp_path; downloads allowed unless a test says so."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("BENCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("BENCH_CACHE_DIR", raising=False)
    monkeypatch.delenv("BENCH_OFFLINE", raising=False)
    return tmp_path


def _write(root: Path, rel: str, content: bytes = b"hello\n") -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def _sources(tmp_path: Path, contents: dict[str, bytes]) -> dict[str, tuple[str, str]]:
    """Files served from a local folder by file:// URL, with their true sha256."""
    downloads = {}
    for rel, content in contents.items():
        src = _write(tmp_path / "remote", rel, content)
        downloads[rel] = (src.as_uri(), hashlib.sha256(content).hexdigest())
    return downloads


def test_directories_follow_env_and_xdg(env, monkeypatch):
    assert data_dir() == env / "data"
    assert cache_dir() == env / "xdg" / "bench"
    monkeypatch.delenv("BENCH_DATA_DIR")
    assert data_dir() == env / "xdg" / "bench" / "data"
    monkeypatch.setenv("BENCH_CACHE_DIR", str(env / "c"))
    assert cache_dir() == env / "c"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(env / "home"))
    assert data_dir() == env / "home" / ".cache" / "bench" / "data"


def test_locate_finds_files_in_data_dir(env):
    for rel in FILES:
        _write(env / "data", rel)
    assert locate(FILES, dataset="wikitext2") == env / "data"


def test_locate_falls_back_to_earlier_downloads(env):
    for rel in FILES:
        _write(env / "xdg" / "bench" / "data", rel)
    assert locate(FILES, dataset="wikitext2") == env / "xdg" / "bench" / "data"


def test_missing_offline_error_says_what_where_and_how(env, monkeypatch):
    monkeypatch.setenv("BENCH_OFFLINE", "1")
    downloads = {rel: (f"https://example.org/wt2/{Path(rel).name}", "0" * 64) for rel in FILES}
    with pytest.raises(DataMissingError) as info:
        locate(FILES, dataset="wikitext2", downloads=downloads)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith("dataset 'wikitext2' needs wikitext-2/train.txt, valid.txt, test.txt under ")
    assert str(env / "data") in msg
    assert "BENCH_DATA_DIR" in msg and "wikitext-2/" in msg
    assert "https://example.org/wt2/" in msg and "BENCH_OFFLINE" in msg
    assert not (env / "xdg" / "bench" / "data").exists()  # offline: nothing attempted


def test_missing_error_lists_only_missing_files(env):
    _write(env / "data", FILES[0])
    with pytest.raises(DataMissingError) as info:
        locate(FILES, dataset="wikitext2")
    msg = str(info.value)
    assert "valid.txt, test.txt" in msg and "train.txt" not in msg
    assert "download" not in msg  # nothing to download from: don't suggest it


def test_download_verifies_and_writes_atomically(env):
    contents = {rel: f"split {rel}\n".encode() for rel in FILES}
    root = locate(FILES, dataset="wikitext2", downloads=_sources(env, contents))
    assert root == env / "xdg" / "bench" / "data"  # downloads go to the user cache, not BENCH_DATA_DIR
    for rel, content in contents.items():
        assert (root / rel).read_bytes() == content
    assert not list(root.rglob("*.part"))
    assert not (env / "data").exists()


def test_download_only_fetches_what_is_missing(env):
    contents = {rel: rel.encode() for rel in FILES}
    downloads = _sources(env, contents)
    fallback = env / "xdg" / "bench" / "data"
    _write(fallback, FILES[0], b"already here")
    downloads[FILES[0]] = ("file:///does/not/exist", "0" * 64)  # would fail if fetched
    assert locate(FILES, dataset="wikitext2", downloads=downloads) == fallback
    assert (fallback / FILES[0]).read_bytes() == b"already here"


def test_checksum_mismatch_names_file_and_both_hashes(env):
    downloads = _sources(env, {"tinyshakespeare/input.txt": b"not shakespeare\n"})
    url, actual = downloads["tinyshakespeare/input.txt"]
    expected = "ab" * 32
    downloads["tinyshakespeare/input.txt"] = (url, expected)
    with pytest.raises(ChecksumError) as info:
        locate(["tinyshakespeare/input.txt"], dataset="tinyshakespeare", downloads=downloads)
    msg = str(info.value)
    assert "tinyshakespeare/input.txt" in msg and expected in msg and actual in msg
    assert "\n" not in msg
    target_dir = env / "xdg" / "bench" / "data" / "tinyshakespeare"
    assert not list(target_dir.iterdir())  # neither the bad file nor a temp file stays


def test_failed_download_is_a_data_missing_error(env):
    downloads = {"x/a.txt": ((env / "nowhere.txt").as_uri(), "0" * 64)}
    with pytest.raises(DataMissingError) as info:
        locate(["x/a.txt"], dataset="demo", downloads=downloads)
    msg = str(info.value)
    assert "dataset 'demo' needs x/a.txt" in msg and "failed" in msg and "\n" not in msg


def test_offline_flag_values(monkeypatch):
    for value, expected in [("1", True), ("yes", True), ("0", False), ("", False), ("false", False)]:
        monkeypatch.setenv("BENCH_OFFLINE", value)
        assert datadir.offline() is expected
