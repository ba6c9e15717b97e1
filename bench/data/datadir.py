"""Where datasets and derived caches live on disk, and how missing files are fetched.

Two roots, each overridable by an environment variable:

* the **data directory** holds raw dataset files a user may already have (a shared read-only
  copy on a cluster, say): ``BENCH_DATA_DIR``, else ``$XDG_CACHE_HOME/bench/data``
  (``~/.cache/bench/data``);
* the **cache directory** holds what bench derives itself (token-id files):
  ``BENCH_CACHE_DIR``, else ``$XDG_CACHE_HOME/bench``.

Downloads always go to the *user's* default data directory, never into ``BENCH_DATA_DIR``:
that folder is the user's own (possibly shared, possibly read-only), and a later run finds
the downloaded copy there anyway because :func:`locate` looks in both places. Every download
is checked against a pinned sha256 before it is moved into place, and written to a temporary
file first (:func:`bench.fileio.atomic_open`), so an interrupted or corrupted transfer never leaves a
file bench would trust.
Set ``BENCH_OFFLINE=1`` to forbid network access; a missing file is then an immediate error.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import sys
import urllib.request
from pathlib import Path, PurePosixPath
from typing import Mapping

from bench.errors import DataMissingError
from bench.fileio import DOWNLOAD_SUFFIX, atomic_open

DATA_DIR_ENV = "BENCH_DATA_DIR"
CACHE_DIR_ENV = "BENCH_CACHE_DIR"
OFFLINE_ENV = "BENCH_OFFLINE"
DOWNLOAD_TIMEOUT_S = 30.0
_CHUNK = 1 << 20


class ChecksumError(DataMissingError):
    """A downloaded file does not match its pinned sha256; nothing was saved."""


def _user_cache_root() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME")
    return Path(xdg).expanduser() if xdg else Path.home() / ".cache"


def default_data_dir() -> Path:
    """The per-user data directory, where downloads land: ``$XDG_CACHE_HOME/bench/data``."""
    return _user_cache_root() / "bench" / "data"


def data_dir() -> Path:
    """The data directory in effect: ``BENCH_DATA_DIR`` if set, else :func:`default_data_dir`."""
    configured = os.environ.get(DATA_DIR_ENV)
    return Path(configured).expanduser() if configured else default_data_dir()


def cache_dir() -> Path:
    """Root for caches bench derives itself: ``BENCH_CACHE_DIR``, else ``$XDG_CACHE_HOME/bench``."""
    configured = os.environ.get(CACHE_DIR_ENV)
    return Path(configured).expanduser() if configured else _user_cache_root() / "bench"


def offline() -> bool:
    """True when ``BENCH_OFFLINE`` is set to anything but an empty/false value."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def locate(
    relative_files: list[str],
    *,
    dataset: str,
    downloads: Mapping[str, tuple[str, str]] | None = None,
) -> Path:
    """Return the directory under which every path in ``relative_files`` exists.

    Looks in :func:`data_dir` first, then in the user's default data directory (where earlier
    downloads went). If neither has them all, downloads the missing ones into the default data
    directory from ``downloads[relative_file] = (url, sha256)``. Raises
    :class:`~bench.errors.DataMissingError` (one line: what is missing, where it was looked
    for, how to fix it) when the files are absent and cannot be downloaded, and
    :class:`ChecksumError` when a download does not match its hash.
    """
    if not relative_files:
        raise ValueError("locate() needs at least one file")
    primary, fallback = data_dir(), default_data_dir()
    for root in dict.fromkeys([primary, fallback]):  # dedupe, keep order
        if all((root / rel).is_file() for rel in relative_files):
            return root

    downloads = dict(downloads or {})
    still_missing = [rel for rel in relative_files if not (fallback / rel).is_file()]
    shown_missing = [rel for rel in relative_files if not (primary / rel).is_file()]
    if not downloads or any(rel not in downloads for rel in still_missing):
        raise DataMissingError(_missing_message(dataset, shown_missing, primary, {}, None))
    if offline():
        reason = f"unset {OFFLINE_ENV} to allow the download from {_url_summary(downloads)}"
        raise DataMissingError(_missing_message(dataset, shown_missing, primary, downloads, reason))

    for rel in still_missing:
        url, sha256 = downloads[rel]
        try:
            _download(url, fallback / rel, sha256, dataset=dataset, relative=rel)
        except (OSError, ValueError) as exc:  # URLError, timeouts and HTTP errors are OSErrors
            reason = f"downloading {url} failed: {_one_line(exc)}"
            raise DataMissingError(
                _missing_message(dataset, shown_missing, primary, downloads, reason)
            ) from exc
    return fallback


def _download(url: str, dest: Path, sha256: str, *, dataset: str, relative: str) -> None:
    """Stream ``url`` to a temporary file next to ``dest``, verify it, then rename it into place."""
    print(f"bench: downloading {relative} for dataset {dataset!r} from {url}", file=sys.stderr)
    digest = hashlib.sha256()
    # A failed checksum raises inside the block, so the temp file is removed and nothing is renamed.
    with atomic_open(dest, suffix=DOWNLOAD_SUFFIX) as out, \
            urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as resp:
        while block := resp.read(_CHUNK):
            digest.update(block)
            out.handle.write(block)
        actual = digest.hexdigest()
        if actual != sha256.lower():
            raise ChecksumError(
                f"download of {relative} for dataset {dataset!r} from {url} failed its checksum: "
                f"expected sha256 {sha256.lower()}, got {actual} (nothing was saved; retry, or put "
                f"a verified copy under {default_data_dir()})"
            )


def _missing_message(
    dataset: str,
    missing: list[str],
    root: Path,
    downloads: Mapping[str, tuple[str, str]],
    reason: str | None,
) -> str:
    """One line naming the missing files, where they were expected, and the ways to fix it."""
    holder = PurePosixPath(missing[0]).parts[0]
    holder = f"{holder}/" if len(PurePosixPath(missing[0]).parts) > 1 else holder
    fixes = f"set {DATA_DIR_ENV} to the folder that holds {holder}"
    if reason is None and downloads:
        reason = f"allow the download from {_url_summary(downloads)}"
    tail = f"{fixes}, or {reason}" if reason else fixes
    return f"dataset {dataset!r} needs {_file_summary(missing)} under {root} ({tail})"


def _file_summary(files: list[str]) -> str:
    """``a/x.txt, y.txt, z.txt`` when the files share a folder, else the full paths."""
    parents = {posixpath.dirname(f) for f in files}
    if len(parents) == 1 and len(files) > 1:
        return ", ".join([files[0]] + [posixpath.basename(f) for f in files[1:]])
    return ", ".join(files)


def _url_summary(downloads: Mapping[str, tuple[str, str]]) -> str:
    """The single URL, or the common folder URL of several (``https://.../wikitext-2/``)."""
    urls = [url for url, _ in downloads.values()]
    if len(urls) == 1:
        return urls[0]
    prefix = os.path.commonprefix(urls)
    return prefix[: prefix.rfind("/") + 1] or ", ".join(urls)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
