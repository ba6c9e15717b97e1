"""The built-in ``token-files`` dataset: pre-tokenized corpora read memory-mapped, never copied whole.

Formats, chosen per file by its name:

* ``.bin`` with ``token_dtype = ""`` (the default): llm.c shards. A header of 256 little-endian int32
  (``[0]`` magic 20240520, ``[1]`` version: 1 = uint16 tokens, 2 = uint32 tokens, ``[2]`` the token
  count), then the tokens. FineWeb's ``fineweb_train_*.bin`` and ``bench data prepare``'s shards.
* ``.bin`` (or any other name) with ``token_dtype = "uint16"`` or ``"uint32"``: headerless little-endian
  ids, as nanoGPT's ``prepare.py`` writes ``train.bin``/``val.bin``.
* ``.npy``: a 1-D integer array (mapped with ``np.load(mmap_mode="r")``).
* ``.npz``: the 1-D integer array named ``npz_key`` (needed when the archive holds several), mapped
  in place inside the zip; so the archive must be stored (``np.savez``), not compressed
  (``np.savez_compressed``).

``train``, ``valid`` and ``test`` are a path or a glob pattern (``fineweb_train_*.bin``); matches
are sorted by name and each is one shard (a training window never spans two). Relative paths are
looked up under the data directory (``BENCH_DATA_DIR``, then the user's default one), like every
dataset's files. ``manifest`` instead names a folder written by ``bench data prepare`` (or its
``manifest.json``): its splits, shard files and tokenizer's vocabulary are used, and each shard's
size is checked against the token count the manifest records (no hashing on every run).

The held-out cut: a split without files (``valid``/``test`` unset, or absent from the manifest) is
cut from the end of the train tokens: the last ``holdout_fraction`` of them (at least 2 tokens)
becomes ``test``, the same amount before it ``valid``, in the sorted order of the train shards, and
train keeps the rest. The cut is a view into the last shard(s): no tokens are copied or shared.

The key is ``token_dtype``, not ``dtype``: ``dtype`` is bench's compute dtype (float32, bfloat16...)
and one cell has one value per key.

The vocabulary: ``vocab_size`` if set, else the manifest's tokenizer's, else that of the registered
tokenizer named by ``tokenizer_name`` (``gpt2``: 50257).

What is checked before anything trains (a ``ValueError`` here is one line and exit 2, see
:func:`bench.data.loading.check_data_available`): no file matching a pattern, a bad magic or
version, a header count that disagrees with the file size (truncated, or trailing bytes), a raw
file whose size is not a whole number of tokens, a manifest count that disagrees with its shard,
a non-integer or non-1-D array, and ids outside ``[0, vocab_size)``.

Checking ids without reading a 10B-token corpus on every run: the largest and smallest id of each
file are computed once, in chunks of 16M tokens (memory flat in file size), and remembered in
``<cache dir>/token-files/id-range.json`` under the file's identity: its resolved path, device,
inode, size and modification time in nanoseconds. A later run only ``stat``s each file; a file
that is replaced or rewritten gets a new identity and is scanned again. (A file rewritten in place
to the same size within one mtime tick would be missed; rewriting a corpus that way is not a real
workflow.) The scan is skipped entirely when the dtype cannot hold an id ``>= vocab_size`` (uint16
ids under a vocabulary of 65536 or more), and for a manifest's shards read against the manifest's
own vocabulary: ``bench data prepare`` wrote them with that tokenizer, so their ids are in range
by construction.
"""

from __future__ import annotations

import glob
import json
import math
import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from bench.components import Component
from bench.data.corpus import SPLITS, Corpus
from bench.data.datadir import cache_dir, data_dir, default_data_dir
from bench.data.shards import TokenShards
from bench.errors import DataMissingError
from bench.fileio import atomic_write_json
from bench.hookspecs import hookimpl

NAME = "token-files"
LLMC_MAGIC = 20240520
LLMC_HEADER_INTS = 256
LLMC_HEADER_BYTES = 4 * LLMC_HEADER_INTS
LLMC_DTYPES: dict[int, np.dtype] = {1: np.dtype("<u2"), 2: np.dtype("<u4")}
RAW_DTYPES: dict[str, np.dtype] = {"uint16": np.dtype("<u2"), "uint32": np.dtype("<u4")}
MANIFEST = "manifest.json"
MANIFEST_FORMAT = "bench-token-shards"
NPY_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
SCAN_CHUNK = 1 << 24  # tokens per chunk of the id-range scan

DEFAULTS: dict[str, Any] = {
    "train": "", "valid": "", "test": "", "manifest": "", "token_dtype": "", "npz_key": "",
    "vocab_size": 0, "tokenizer_name": "", "holdout_fraction": 0.005,
}


def token_files(train: str = "", valid: str = "", test: str = "", manifest: str = "", token_dtype: str = "",
                npz_key: str = "", vocab_size: int = 0, tokenizer_name: str = "",
                holdout_fraction: float = 0.005) -> Corpus:
    """Token ids from llm.c shards, raw ``.bin``, ``.npy`` or ``.npz`` files (see the module docstring)."""
    if token_dtype and token_dtype not in RAW_DTYPES:
        raise ValueError(f"token_dtype must be '' (llm.c shards with a header), 'uint16' or 'uint32', "
                         f"got {token_dtype!r}")
    if not 0 < holdout_fraction < 0.5:
        raise ValueError(f"holdout_fraction must be between 0 and 0.5, got {holdout_fraction!r}")
    if manifest and (train or valid or test):
        raise ValueError("set either manifest or train/valid/test, not both")
    if manifest:
        shards, manifest_vocab, source = _from_manifest(manifest)
    elif train:
        shards = {split: _open_pattern(pattern, split, token_dtype, npz_key)
                  for split, pattern in (("train", train), ("valid", valid), ("test", test)) if pattern}
        manifest_vocab, source = None, f"files {', '.join(p for p in (train, valid, test) if p)}"
    else:
        raise DataMissingError(f"dataset {NAME!r} needs train (a file or glob pattern of token files, e.g. "
                               "train = \"fineweb10B/fineweb_train_*.bin\") or manifest (a folder made by "
                               "`bench data prepare`)")
    vocab = vocab_size or manifest_vocab or _tokenizer_vocab(tokenizer_name)
    if not vocab:
        raise ValueError("no vocabulary size: set vocab_size, or tokenizer_name to the tokenizer the files were "
                         "made with (e.g. tokenizer_name = \"gpt2\")")
    trusted = manifest_vocab is not None and vocab >= manifest_vocab
    if not trusted:
        for split_shards in shards.values():
            for path, array in split_shards.items():
                _check_ids(Path(path), array, vocab)
    splits = _hold_out(shards, holdout_fraction)
    return Corpus(name=NAME, splits=dict(splits), vocab_size=int(vocab),
                  notes={"source": f"{source}; {_describe(splits, shards)}"})


# -- finding and opening files -----------------------------------------------------------------


def _open_pattern(pattern: str, split: str, dtype: str, npz_key: str) -> dict[str, np.ndarray]:
    return {str(path): open_token_file(path, dtype, npz_key) for path in _matches(pattern, split)}


def _matches(pattern: str, split: str) -> list[Path]:
    given = Path(pattern).expanduser()
    roots = [None] if given.is_absolute() else list(dict.fromkeys([data_dir(), default_data_dir()]))
    looked = []
    for root in roots:
        full = given if root is None else root / given
        looked.append(str(full))
        found = sorted(Path(p) for p in glob.glob(str(full), recursive=True) if Path(p).is_file())
        if found:
            return found
    raise DataMissingError(f"dataset {NAME!r}: {split} = {pattern!r} matches no file (looked for "
                           f"{' and '.join(looked)}); fix the path or set BENCH_DATA_DIR to the folder that holds it")


def open_token_file(path: Path, dtype: str = "", npz_key: str = "") -> np.ndarray:
    """The file's token ids as a read-only memory map (an empty array for an empty shard)."""
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return _checked_array(path, _load_npy(path))
    if suffix == ".npz":
        return _checked_array(path, _npz_member(path, npz_key))
    if dtype:
        return _raw(path, RAW_DTYPES[dtype])
    return _llmc(path)


def _llmc(path: Path) -> np.ndarray:
    size = path.stat().st_size
    if size < LLMC_HEADER_BYTES:
        raise ValueError(f"{path}: {size} bytes is shorter than an llm.c shard's {LLMC_HEADER_BYTES}-byte header "
                         "(truncated? for headerless nanoGPT-style .bin files set token_dtype = \"uint16\")")
    with path.open("rb") as handle:
        magic, version, count = struct.unpack("<3i", handle.read(12))
    if magic != LLMC_MAGIC:
        raise ValueError(f"{path}: bad magic {magic}, not an llm.c shard (magic {LLMC_MAGIC}); for headerless "
                         "nanoGPT-style .bin files set token_dtype = \"uint16\" or \"uint32\"")
    if version not in LLMC_DTYPES:
        raise ValueError(f"{path}: llm.c shard version {version} is not supported (1 = uint16, 2 = uint32)")
    dtype = LLMC_DTYPES[version]
    expected = LLMC_HEADER_BYTES + count * dtype.itemsize
    if count < 0 or size != expected:
        held = (size - LLMC_HEADER_BYTES) / dtype.itemsize
        what = "truncated" if size < expected else "has trailing bytes"
        raise ValueError(f"{path}: {what}: its header says {count} tokens ({expected} bytes) but the file has "
                         f"{size} bytes ({held:g} tokens); re-download or re-create it")
    if count == 0:
        return np.empty(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=LLMC_HEADER_BYTES, shape=(count,))


def _raw(path: Path, dtype: np.dtype) -> np.ndarray:
    size = path.stat().st_size
    if size % dtype.itemsize:
        raise ValueError(f"{path}: {size} bytes is not a whole number of {dtype.name} tokens (odd byte count: "
                         "truncated, or not a raw token file; check token_dtype)")
    if size == 0:
        return np.empty(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r")


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise ValueError(f"{path}: not a readable .npy file ({_first_line(exc)}); truncated or damaged?") from None


def _npz_member(path: Path, key: str) -> np.ndarray:
    """Map the array stored as ``key.npy`` inside the zip, in place: a stored (uncompressed) member's
    bytes are contiguous in the file, after its local header and the ``.npy`` header."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = {name[:-4]: archive.getinfo(name) for name in archive.namelist() if name.endswith(".npy")}
    except (zipfile.BadZipFile, OSError) as exc:
        raise ValueError(f"{path}: not a readable .npz file ({_first_line(exc)}); truncated or damaged?") from None
    if not key and len(members) != 1:
        raise ValueError(f"{path} holds arrays {sorted(members)}; set npz_key to the one with the token ids")
    key = key or next(iter(members))
    if key not in members:
        raise ValueError(f"{path} has no array {key!r} (it holds {sorted(members)}); fix npz_key")
    info = members[key]
    if info.compress_type != zipfile.ZIP_STORED:
        raise ValueError(f"{path}: array {key!r} is compressed (np.savez_compressed) and cannot be memory-mapped; "
                         "re-save it with np.savez or as a .npy file")
    with path.open("rb") as handle:
        handle.seek(info.header_offset)
        local = handle.read(30)
        name_length, extra_length = struct.unpack("<HH", local[26:30])
        handle.seek(info.header_offset + 30 + name_length + extra_length)
        read_header = NPY_HEADER_READERS.get(np.lib.format.read_magic(handle))
        if read_header is None:
            raise ValueError(f"{path}: array {key!r} has an .npy header version numpy cannot map; re-save it")
        shape, fortran, dtype = read_header(handle)
        offset = handle.tell()
    count = math.prod(shape)
    if offset + count * dtype.itemsize > path.stat().st_size:
        raise ValueError(f"{path}: array {key!r} is truncated; re-create the file")
    if count == 0:
        return np.empty(shape, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")


def _checked_array(path: Path, array: np.ndarray) -> np.ndarray:
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{path}: holds a {array.ndim}-D {array.dtype} array; token files hold a 1-D integer array")
    return array


def write_llmc_shard(path: Path, tokens: np.ndarray, version: int = 1) -> None:
    """Write ``tokens`` as an llm.c shard (header, then the ids); for tests and benchmarks."""
    header = np.zeros(LLMC_HEADER_INTS, dtype="<i4")
    header[:3] = LLMC_MAGIC, version, len(tokens)
    with path.open("wb") as handle:
        handle.write(header.tobytes())
        handle.write(np.ascontiguousarray(tokens, dtype=LLMC_DTYPES[version]).tobytes())


# -- the manifest of `bench data prepare` ------------------------------------------------------


def _from_manifest(manifest: str) -> tuple[dict[str, dict[str, np.ndarray]], int, str]:
    given = Path(manifest).expanduser()
    if not given.is_absolute():
        given = next((root / given for root in (data_dir(), default_data_dir()) if (root / given).exists()),
                     data_dir() / given)
    path = given / MANIFEST if given.is_dir() else given
    if not path.is_file():
        raise DataMissingError(f"dataset {NAME!r}: manifest {manifest!r} not found (looked for {path}); run "
                               "`bench data prepare` or fix the path")
    try:
        document = json.loads(path.read_text())
        if document.get("format") != MANIFEST_FORMAT or document.get("version") != 1:
            raise ValueError(f"format {document.get('format')!r} version {document.get('version')!r}")
        vocab = int(document["tokenizer"]["vocab_size"])
        listed = {split: document["splits"][split] for split in SPLITS if document["splits"].get(split)}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path} is not a {MANIFEST_FORMAT} version 1 manifest ({_first_line(exc)}); "
                         "re-run `bench data prepare`") from None
    if "train" not in listed:
        raise ValueError(f"{path} lists no train shards; re-run `bench data prepare`")
    shards: dict[str, dict[str, np.ndarray]] = {}
    for split, entries in listed.items():
        shards[split] = {}
        for entry in entries:
            shard = path.parent / entry["file"]
            if not shard.is_file():
                raise DataMissingError(f"dataset {NAME!r}: {shard} listed in {path} is missing; re-run "
                                       "`bench data prepare` to finish it")
            array = _llmc(shard)
            if len(array) != int(entry["tokens"]):
                raise ValueError(f"{shard}: holds {len(array)} tokens but {path} records {entry['tokens']}; "
                                 "re-run `bench data prepare`")
            shards[split][str(shard)] = array
    tokenizer = document["tokenizer"].get("name", "?")
    return shards, vocab, f"manifest {path} (tokenizer {tokenizer})"


def _tokenizer_vocab(name: str) -> int:
    if not name:
        return 0
    from bench.registry import load_plugins  # only when asked: loading plugins is not free

    registry = load_plugins(warn=lambda line: None).registry
    try:
        component = registry.get("tokenizer", name)
    except Exception as exc:  # noqa: BLE001 - an unknown name: its message lists the known ones
        raise ValueError(f"tokenizer_name: {_first_line(exc)}") from None
    return int(component.build(component.defaults).vocab_size)


# -- ids in range, checked once per file identity ----------------------------------------------


def _check_ids(path: Path, array: np.ndarray, vocab: int) -> None:
    if len(array) == 0:
        return
    if not np.issubdtype(array.dtype, np.signedinteger) and np.iinfo(array.dtype).max < vocab:
        return  # no id this dtype can hold reaches the vocabulary
    low, high = id_range(path, array)
    if low < 0 or high >= vocab:
        bad = low if low < 0 else high
        raise ValueError(f"{path}: holds id {bad}, outside [0, vocab_size={vocab}); set vocab_size (or "
                         "tokenizer_name) to the tokenizer the files were made with")


def id_range(path: Path, array: np.ndarray) -> tuple[int, int]:
    """The smallest and largest id in ``array`` (the contents of ``path``), remembered per file identity."""
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_dev}|{stat.st_ino}|{stat.st_size}|{stat.st_mtime_ns}|{array.dtype}|{len(array)}"
    cache_file = cache_dir() / "token-files" / "id-range.json"
    try:
        known = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        known = {}
    if key in known:
        return int(known[key][0]), int(known[key][1])
    low, high = scan_range(array)
    known[key] = [low, high]
    try:
        atomic_write_json(cache_file, known)
    except OSError:
        pass  # a read-only cache only means scanning again next time
    return low, high


def scan_range(array: np.ndarray) -> tuple[int, int]:
    """Smallest and largest id, a chunk at a time: memory stays flat however large the file."""
    chunks = [array[at: at + SCAN_CHUNK] for at in range(0, len(array), SCAN_CHUNK)]
    return min(int(c.min()) for c in chunks), max(int(c.max()) for c in chunks)


# -- the held-out cut --------------------------------------------------------------------------


def _hold_out(shards: dict[str, dict[str, np.ndarray]], fraction: float) -> dict[str, TokenShards]:
    train = list(shards["train"].items())
    total = sum(len(a) for _, a in train)
    missing = [split for split in ("test", "valid") if split not in shards]  # test is cut from the very end
    cut = max(2, math.ceil(fraction * total))
    if missing and total - cut * len(missing) < 2:
        raise ValueError(f"train has {total} tokens, too few to hold out {cut} for each of {missing}; "
                         "give valid/test files or more train data")
    splits: dict[str, TokenShards] = {}
    for split in missing:
        train, tail = _cut_tail(train, cut)
        splits[split] = TokenShards([a for _, a in tail], [f"{n} (held out)" for n, _ in tail])
    splits["train"] = TokenShards([a for _, a in train], [n for n, _ in train])
    for split in ("valid", "test"):
        if split in shards:
            splits[split] = TokenShards(list(shards[split].values()), list(shards[split]))
    return {split: splits[split] for split in SPLITS}


def _cut_tail(shards: list[tuple[str, np.ndarray]], n: int
              ) -> tuple[list[tuple[str, np.ndarray]], list[tuple[str, np.ndarray]]]:
    """The last ``n`` tokens as views of the last shard(s), and what remains before them."""
    head, tail = list(shards), []  # type: list[tuple[str, np.ndarray]], list[tuple[str, np.ndarray]]
    while n > 0:
        name, array = head.pop()
        take = min(n, len(array))
        tail.insert(0, (name, array[len(array) - take:]))
        if take < len(array):
            head.append((name, array[: len(array) - take]))
        n -= take
    return head, tail


def _describe(splits: dict[str, TokenShards], shards: dict[str, Any]) -> str:
    parts = []
    for split in SPLITS:
        held = "" if split in shards else ", held out from the end of train"
        parts.append(f"{split} {len(splits[split]):,} tokens in {len(splits[split].arrays)} shard(s){held}")
    return "; ".join(parts)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


@hookimpl
def bench_datasets() -> list[Component]:
    return [Component(
        name=NAME,
        factory=token_files,
        defaults=dict(DEFAULTS),
        description="pre-tokenized files, memory-mapped: llm.c shards, raw uint16/uint32 .bin, .npy, .npz; "
                    "train/valid/test paths or globs, or a `bench data prepare` manifest",
        tags=frozenset({"tokens"}),
    )]
