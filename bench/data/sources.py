"""Documents from files, streamed: text, JSONL and Parquet, plain or ``.gz``/``.zst`` compressed.

An input is a file or a folder (every supported file under it, in sorted path order). What a
document is:

* ``.txt`` (any other suffix too): the whole file is one document, read in blocks of
  ``BLOCK_CHARS`` characters, exactly as stored (no newline translation);
* ``.jsonl`` / ``.json``: one JSON object per line, the document is its ``field`` (``text`` by
  default), which must be a string; blank lines are skipped;
* ``.parquet``: one document per row of the string column ``field``, read a record batch at a time.

``.gz`` and ``.zst`` after any of these are decompressed on the fly (``zstandard``, the ``data``
extra, for ``.zst``). A Hugging Face dataset (the ``hf`` extra) is read with
``datasets.load_dataset(..., streaming=True)``. Nothing here holds more than one block, line or
record batch of an input in memory.

:meth:`Source.check` catches what can be caught before anything is written (a missing file, a
JSONL whose first record has no string ``field``, a Parquet file without that column); a bad
record further in raises :class:`bench.errors.BenchError` naming the file and line when it is
reached. The Parquet share of progress is estimated per record batch (pyarrow reads column chunks
itself).
"""

from __future__ import annotations

import gzip
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from bench.errors import ConfigError, DataMissingError

BLOCK_CHARS = 1 << 20  # characters read at a time from a text file
PARQUET_BATCH_ROWS = 1024
COMPRESSIONS = (".gz", ".zst")
KINDS = {".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet", ".txt": "text", ".text": "text"}

Document = Iterator[str]  # a document is a stream of text blocks


def kind_of(path: Path) -> tuple[str, str | None]:
    """``(kind, compression)`` of a file from its suffixes: ``("jsonl", ".zst")`` for ``a.jsonl.zst``."""
    suffixes = [s.lower() for s in path.suffixes]
    compression = suffixes.pop() if suffixes and suffixes[-1] in COMPRESSIONS else None
    return KINDS.get(suffixes[-1] if suffixes else "", "text"), compression


def expand(paths: list[str]) -> list[Path]:
    """Files named by ``paths``, folders replaced by the files under them (sorted); missing ones raise."""
    files: list[Path] = []
    for name in paths:
        path = Path(name).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
            if not found:
                raise DataMissingError(f"input folder {str(path)!r} holds no files; give text, JSONL or Parquet files")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise DataMissingError(f"input {str(path)!r} does not exist; give text, JSONL or Parquet files "
                                   f"or a folder of them")
    return files


class CountingReader(io.RawIOBase):
    """A binary file that counts the bytes read from it (compressed bytes, for progress)."""

    def __init__(self, handle: BinaryIO, progress: list[int] | None = None) -> None:
        self.handle = handle
        self.count = 0
        self.progress = progress if progress is not None else [0]  # progress[0] += every byte read

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self.handle.readinto(buffer) or 0  # type: ignore[attr-defined]
        self.count += n
        self.progress[0] += n
        return n

    def close(self) -> None:
        self.handle.close()
        super().close()


@dataclass
class Source:
    """The files of one split and how to read documents from them."""

    files: list[Path]
    field: str = "text"

    @property
    def total_bytes(self) -> int:
        return sum(path.stat().st_size for path in self.files)

    def describe(self) -> list[dict[str, Any]]:
        """What the manifest records of the inputs (and what decides whether a resume may continue)."""
        out = []
        for path in self.files:
            stat = path.stat()
            out.append({"path": str(path.resolve()), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns})
        return out

    def check(self) -> None:
        """Fail early, before anything is written, on what can be seen without reading everything."""
        for path in self.files:
            kind, compression = kind_of(path)
            if not os.access(path, os.R_OK):
                raise DataMissingError(f"input {str(path)!r} is not readable")
            if compression == ".zst":
                _zstandard()
            if kind == "jsonl":
                for _ in self._jsonl(path, limit=1):
                    pass
            elif kind == "parquet":
                self._parquet_column(path)

    def documents(self, progress: list[int]) -> Iterator[Document]:
        """Every document of every file, in order; ``progress[0]`` grows by the input bytes read."""
        for path in self.files:
            kind, _ = kind_of(path)
            with _open_binary(path, progress) as raw:
                reader = {"text": self._text, "jsonl": self._jsonl_raw, "parquet": self._parquet}[kind]
                yield from reader(path, raw)

    # -- one reader per kind ----------------------------------------------------------------------

    @staticmethod
    def _text(path: Path, raw: CountingReader) -> Iterator[Document]:
        def blocks() -> Iterator[str]:
            text = io.TextIOWrapper(io.BufferedReader(raw), encoding="utf-8", newline="")
            try:
                while block := text.read(BLOCK_CHARS):
                    yield block
            except UnicodeDecodeError as exc:
                raise ConfigError(f"input {str(path)!r} is not UTF-8 text ({exc.reason} at byte {exc.start} of a "
                                  f"block); convert it to UTF-8") from None
            finally:
                text.detach()
        yield blocks()

    def _jsonl(self, path: Path, limit: int | None = None) -> Iterator[Document]:
        with _open_binary(path, None) as raw:
            yield from self._jsonl_raw(path, raw, limit)

    def _jsonl_raw(self, path: Path, raw: CountingReader, limit: int | None = None) -> Iterator[Document]:
        seen = 0
        for number, line in enumerate(io.BufferedReader(raw), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as exc:
                raise ConfigError(f"{path}:{number}: not a JSON line ({exc}); each line of a .jsonl input must be "
                                  f"one JSON object") from None
            text = record.get(self.field) if isinstance(record, dict) else None
            if not isinstance(text, str):
                found = f"keys {sorted(record)[:8]}" if isinstance(record, dict) else type(record).__name__
                raise ConfigError(f"{path}:{number}: no string field {self.field!r} (found {found}); "
                                  f"name the text field with --field")
            yield iter((text,))
            seen += 1
            if limit is not None and seen >= limit:
                return

    def _parquet_column(self, path: Path) -> Any:
        pq = _pyarrow_parquet()
        import pyarrow as pa

        try:
            parquet = pq.ParquetFile(path)
        except Exception as exc:  # noqa: BLE001 - pyarrow's many error types all mean "not a Parquet file"
            raise ConfigError(f"input {str(path)!r} is not a readable Parquet file ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
        schema = parquet.schema_arrow
        if self.field not in schema.names or not (pa.types.is_string(schema.field(self.field).type)
                                                  or pa.types.is_large_string(schema.field(self.field).type)):
            raise ConfigError(f"{path}: no string column {self.field!r} (columns {schema.names[:8]}); "
                              f"name the text column with --field")
        return parquet

    def _parquet(self, path: Path, raw: CountingReader) -> Iterator[Document]:
        parquet = self._parquet_column(path)
        size, rows, done = path.stat().st_size, max(1, parquet.metadata.num_rows), 0
        for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=[self.field]):
            for text in batch.column(0).to_pylist():
                yield iter((text or "",))
            # pyarrow reads column chunks itself, not through ``raw``: count this batch's share of the file.
            share = size * (done + batch.num_rows) // rows - size * done // rows
            raw.progress[0] += share
            done += batch.num_rows


@dataclass
class HFSource(Source):
    """A Hugging Face dataset, streamed (``pip install bench-lm[hf]``)."""

    name: str = ""
    config: str | None = None
    split: str = "train"

    @property
    def total_bytes(self) -> int:
        return 0  # unknown: the progress bar shows tokens and rate, no ETA

    def describe(self) -> list[dict[str, Any]]:
        return [{"hf_dataset": self.name, "config": self.config, "split": self.split}]

    def check(self) -> None:
        for _ in self._records(limit=1):
            pass

    def documents(self, progress: list[int]) -> Iterator[Document]:
        for text in self._records():
            yield iter((text,))

    def _records(self, limit: int | None = None) -> Iterator[str]:
        try:
            import datasets
        except ImportError:
            raise ConfigError("--hf needs the Hugging Face datasets package: pip install 'bench-lm[hf]'") from None
        try:
            stream = datasets.load_dataset(self.name, self.config, split=self.split, streaming=True)
        except Exception as exc:  # noqa: BLE001 - offline, unknown name, bad config: one line either way
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            raise DataMissingError(f"Hugging Face dataset {self.name!r} could not be opened "
                                   f"({type(exc).__name__}: {first}); check the name, config and split, "
                                   f"and the network or HF cache") from None
        for number, record in enumerate(stream, start=1):
            text = record.get(self.field)
            if not isinstance(text, str):
                raise ConfigError(f"Hugging Face dataset {self.name!r} record {number}: no string field "
                                  f"{self.field!r} (found {sorted(record)[:8]}); name it with --field")
            yield text
            if limit is not None and number >= limit:
                return


def _open_binary(path: Path, progress: list[int] | None) -> CountingReader:
    """``path`` opened for reading, its bytes counted (into ``progress``) before decompression."""
    _, compression = kind_of(path)
    raw = CountingReader(open(path, "rb"), progress)  # noqa: SIM115 - closed with the reader returned
    if compression is None:
        return raw
    if compression == ".gz":
        return _Decompressed(raw, gzip.GzipFile(fileobj=raw, mode="rb"))
    return _Decompressed(raw, _zstandard().ZstdDecompressor().stream_reader(raw, read_across_frames=True))


class _Decompressed(CountingReader):
    """A decompressing reader over ``raw`` (which does the counting)."""

    def __init__(self, raw: CountingReader, stream: Any) -> None:
        super().__init__(stream, [0])
        self.raw = raw

    def readinto(self, buffer: Any) -> int:
        data = self.handle.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def close(self) -> None:
        self.handle.close()
        self.raw.close()
        io.RawIOBase.close(self)


def _zstandard() -> Any:
    try:
        import zstandard
    except ImportError:
        raise ConfigError(".zst inputs need the zstandard package: pip install 'bench-lm[data]'") from None
    return zstandard


def _pyarrow_parquet() -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError("Parquet inputs need pyarrow: pip install 'bench-lm[data]'") from None
    return pq


