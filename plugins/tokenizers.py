"""Built-in tokenizers: ``gpt2`` (tiktoken's GPT-2 BPE) and ``byte`` (raw UTF-8 bytes).

Both expose ``encode_batch`` besides the :class:`bench.data.tokenizer.Tokenizer` protocol so the
token cache can tokenize large corpora in parallel chunks.

``gpt2`` encodes with ``encode_ordinary``: corpus text is data, so a literal ``<|endoftext|>``
in it is spelled out as ordinary BPE tokens instead of becoming the document separator (and
instead of tiktoken's default of raising on special-token text). tiktoken downloads its BPE
files on first use and caches them in ``TIKTOKEN_CACHE_DIR``; on a machine without network
access that folder must already hold them, which is what the error raised here says.
"""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
from typing import Any, Callable

from bench.components import Component
from bench.data.datadir import OFFLINE_ENV, offline
from bench.errors import DataMissingError
from bench.hookspecs import hookimpl

# The files tiktoken fetches for "gpt2"; its cache names each by the sha1 of its URL.
_GPT2_FILES = (
    "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe",
    "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json",
)


class TiktokenTokenizer:
    """A tiktoken encoding behind bench's tokenizer protocol, without special-token parsing.

    The encoding is loaded on first use: reading GPT-2's BPE files takes ~0.3 s, and a dry run,
    or a cell whose splits are already in the token cache, needs only the vocabulary size."""

    def __init__(self, name: str, load: Callable[[], Any], vocab_size: int, eot_token: int | None) -> None:
        self.name = name
        self.vocab_size = vocab_size
        self.eot_token = eot_token
        self._load = load

    @functools.cached_property
    def _encoding(self) -> Any:
        encoding = self._load()
        if (encoding.n_vocab, encoding.eot_token) != (self.vocab_size, self.eot_token):
            raise DataMissingError(f"tokenizer {self.name!r}: tiktoken's encoding has vocabulary {encoding.n_vocab} "
                                   f"and end-of-text {encoding.eot_token}, not the declared {self.vocab_size} and "
                                   f"{self.eot_token}; reinstall tiktoken or clear TIKTOKEN_CACHE_DIR")
        return encoding

    def encode(self, text: str) -> list[int]:
        return self._encoding.encode_ordinary(text)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Encode each text independently, on tiktoken's thread pool."""
        return self._encoding.encode_ordinary_batch(texts)

    def decode(self, ids: list[int]) -> str:
        return self._encoding.decode([int(i) for i in ids])

    def __repr__(self) -> str:
        return f"TiktokenTokenizer({self.name!r}, vocab_size={self.vocab_size})"


class ByteTokenizer:
    """UTF-8 bytes as tokens: vocabulary 256, no out-of-vocabulary text, no separator token."""

    name = "byte"
    vocab_size = 256
    eot_token: int | None = None

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [list(t.encode("utf-8")) for t in texts]

    def decode(self, ids: list[int]) -> str:
        # A slice of a byte stream can cut a multi-byte character; show it rather than fail.
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")

    def __repr__(self) -> str:
        return "ByteTokenizer()"


def _tiktoken_cache_dir() -> str:
    """The folder tiktoken reads its cache from (mirrors ``tiktoken.load.read_file_cached``)."""
    for var in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if var in os.environ:
            return os.environ[var]
    return os.path.join(tempfile.gettempdir(), "data-gym-cache")


def gpt2() -> TiktokenTokenizer:
    """GPT-2's 50257-token BPE; ``<|endoftext|>`` (50256) separates documents."""
    cache = _tiktoken_cache_dir()
    wanted = [hashlib.sha1(url.encode()).hexdigest() for url in _GPT2_FILES]

    def missing(why: str) -> DataMissingError:
        return DataMissingError(
            f"tokenizer 'gpt2' could not load tiktoken's BPE files ({why}); set TIKTOKEN_CACHE_DIR "
            f"to a folder holding the cached gpt2 files ({', '.join(wanted)}); looked in {cache}"
        )

    if offline() and not all(os.path.isfile(os.path.join(cache, f)) for f in wanted):
        raise missing(f"{OFFLINE_ENV} is set and the cache lacks them")  # don't wait on the network

    def load() -> Any:
        import tiktoken

        try:
            return tiktoken.get_encoding("gpt2")
        except Exception as exc:  # network errors, hash mismatches, unreadable cache: all mean "no files"
            first = (str(exc).strip().splitlines() or [""])[0]
            raise missing(f"{type(exc).__name__}: {first}") from exc

    return TiktokenTokenizer("gpt2", load, vocab_size=50257, eot_token=50256)


def byte() -> ByteTokenizer:
    """Raw UTF-8 bytes (vocabulary 256)."""
    return ByteTokenizer()


@hookimpl
def bench_tokenizers() -> list[Component]:
    return [
        Component(
            name="gpt2",
            factory=gpt2,
            description="GPT-2 BPE via tiktoken (vocab 50257, <|endoftext|> = 50256; "
                        "text is never parsed for special tokens)",
        ),
        Component(
            name="byte",
            factory=byte,
            description="UTF-8 bytes (vocab 256, no end-of-text token)",
        ),
    ]
