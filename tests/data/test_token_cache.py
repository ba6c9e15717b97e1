"""The on-disk token cache: tokenize once, memory-map afterwards."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from bench.data import token_cache
from bench.data.corpus import TextFile
from bench.data.loading import word_count
from bench.data.token_cache import load_tokens, split_for_batch, token_dtype, word_count_of_blocks
from bench.fileio import sweep_temp_files


class CountingTokenizer:
    """UTF-8 bytes, counting how often it is asked to encode."""

    eot_token = None

    def __init__(self, name: str = "counting", vocab_size: int = 256, batch: bool = False) -> None:
        self.name = name
        self.vocab_size = vocab_size
        self.encode_calls = 0
        self.batch_calls = 0
        self.batch_items = 0
        if batch:
            self.encode_batch = self._encode_batch

    def encode(self, text: str) -> list[int]:
        self.encode_calls += 1
        return list(text.encode("utf-8"))

    def _encode_batch(self, texts: list[str]) -> list[list[int]]:
        self.batch_calls += 1
        self.batch_items += len(texts)
        return [list(t.encode("utf-8")) for t in texts]

    def decode(self, ids) -> str:
        return bytes(ids).decode("utf-8")


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_second_load_reads_the_cache_without_encoding(cache):
    tok = CountingTokenizer()
    first = load_tokens("hello world\n", tok)
    assert tok.encode_calls == 1
    second = load_tokens("hello world\n", tok)
    assert tok.encode_calls == 1
    assert isinstance(second, np.memmap) and second.dtype == np.uint16
    assert not second.flags.writeable
    np.testing.assert_array_equal(first, second)
    assert second.tolist() == list(b"hello world\n")
    (path,) = (cache / "tokens").iterdir()
    # <text key>-<tokenizer>.<dtype>.n<token count>.<first 16 hex of the file's SHA-256>.bin
    assert path.name.endswith(f"-counting.uint16.n12.{token_cache.sha256_file(path)[:16]}.bin")
    assert path.stat().st_size == 2 * len(b"hello world\n")


def test_a_fresh_tokenizer_object_also_hits_the_cache():
    load_tokens("abc", CountingTokenizer())
    again = CountingTokenizer()
    assert load_tokens("abc", again).tolist() == [97, 98, 99]
    assert again.encode_calls == 0


def test_key_is_text_and_tokenizer_name():
    a, b = CountingTokenizer("a"), CountingTokenizer("b")
    load_tokens("same", a)
    load_tokens("same", b)
    load_tokens("other", a)
    assert (a.encode_calls, b.encode_calls) == (2, 1)


def test_large_vocab_uses_uint32():
    tok = CountingTokenizer("big", vocab_size=70_000)
    ids = load_tokens("xyz", tok)
    assert ids.dtype == np.uint32 and ids.tolist() == [120, 121, 122]
    assert token_dtype(65_536) == np.uint16 and token_dtype(65_537) == np.uint32


def test_empty_text_is_an_empty_array(cache):
    tok = CountingTokenizer()
    ids = load_tokens("", tok)
    assert ids.shape == (0,) and ids.dtype == np.uint16
    assert tok.encode_calls == 0 and not cache.exists()


def test_ids_outside_the_vocabulary_are_rejected():
    with pytest.raises(ValueError, match="outside"):
        load_tokens("é", CountingTokenizer("tiny", vocab_size=100))  # UTF-8 bytes 0xC3 0xA9


def test_large_text_goes_through_encode_batch(monkeypatch):
    monkeypatch.setattr(token_cache, "CHUNK_CHARS", 100)
    text = "".join(f"line {i} with ünïcode\n" for i in range(200))
    tok = CountingTokenizer("batched", batch=True)
    ids = load_tokens(text, tok)
    assert tok.encode_calls == 0 and tok.batch_items > 10
    assert tok.batch_calls == -(-tok.batch_items // token_cache.CHUNKS_PER_BATCH)
    assert ids.tolist() == list(text.encode("utf-8"))


def test_split_for_batch_tiles_text_at_safe_line_starts():
    text = "".join(f"{' ' if i % 3 else ''}word {i} \n{'' if i % 5 else chr(10)}" for i in range(500))
    pieces = split_for_batch(text, chunk_chars=64)
    assert len(pieces) > 10
    assert "".join(pieces) == text
    for left, right in zip(pieces, pieces[1:]):
        assert left.endswith("\n")
        # a line start that is a pretoken boundary: non-space, or one space then non-space,
        # and (for a non-space start) no whitespace before the newline
        assert (right[0] == " " and not right[1].isspace()) or (not right[0].isspace() and not left[-2].isspace())


def test_split_for_batch_without_safe_cut_keeps_one_piece():
    assert split_for_batch("x" * 1000, chunk_chars=10) == ["x" * 1000]
    assert split_for_batch("", chunk_chars=10) == []


# -- fault 3: the cache file carries its token count and checksum; a damaged one is rebuilt ------

def _the_cache_file(cache):
    (path,) = (cache / "tokens").glob("*.bin")
    return path


@pytest.mark.parametrize("damage", ["truncated-to-even-length", "same-length-other-bytes"])
def test_a_damaged_cache_is_rebuilt_with_a_warning(cache, capsys, damage):
    text = "".join(f"line {i}\n" for i in range(300))
    tok = CountingTokenizer()
    expected = load_tokens(text, tok).tolist()
    path = _the_cache_file(cache)
    data = path.read_bytes()
    path.write_bytes(data[:1000] if damage.startswith("truncated") else data[:-2] + b"\x01\x00")
    capsys.readouterr()
    again = load_tokens(text, tok)
    assert again.tolist() == expected and tok.encode_calls == 2
    err = capsys.readouterr().err
    problem = (f"1000 bytes where its name records {len(expected)} tokens of 2 bytes"
               if damage.startswith("truncated") else
               "its SHA-256 does not start with the 16 hex digits its name records")
    assert f"warning: token cache {path} is damaged ({problem}); rebuilding it" in err
    assert _the_cache_file(cache).read_bytes() == data  # rebuilt under the same name
    tok.encode_calls = 0
    load_tokens(text, tok)
    assert tok.encode_calls == 0 and "warning" not in capsys.readouterr().err


def test_orphan_temp_files_of_the_cache_are_swept(cache):
    import os
    import time

    load_tokens("abc", CountingTokenizer())
    orphan = cache / "tokens" / ".0123456789abcdef-counting.uint16.bin.a1b2c3d4.tmp"
    orphan.write_bytes(b"\x00" * 4900)
    os.utime(orphan, (time.time() - 3600,) * 2)
    assert sweep_temp_files(token_cache.tokens_dir()) == [orphan]
    assert len(list((cache / "tokens").iterdir())) == 1


# -- fault 10: tokenizing says what it does, with progress ---------------------------------------

def test_tokenizing_says_what_and_shows_progress(monkeypatch, capsys):
    monkeypatch.setattr(token_cache, "CHUNK_CHARS", 100)
    monkeypatch.setattr(token_cache, "PROGRESS_EVERY_S", 0.0)
    text = "".join(f"line {i} with text\n" for i in range(200))
    tok = CountingTokenizer("batched", batch=True)
    load_tokens(text, tok, label="wikitext2 train")
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("bench: tokenizing wikitext2 train with batched (once; cached in ")
    counts = [int(line.split()[1].replace(",", "")) for line in lines[1:-1]]
    assert len(counts) == tok.batch_calls > 1 and counts == sorted(counts) and counts[-1] == len(text)
    assert all(line.endswith(" s)") and " tokens of wikitext2 train (" in line for line in lines[1:-1])
    assert lines[-1].startswith(f"bench: tokenized wikitext2 train: {len(text.encode()):,} tokens in ")
    load_tokens(text, tok, label="wikitext2 train")
    assert capsys.readouterr().err == ""  # cached: nothing to say


# -- text files: streamed through the one tokenization path, keyed cheaply ------------------------

def test_a_text_file_gives_the_ids_of_its_whole_text(tmp_path, monkeypatch):
    monkeypatch.setattr(token_cache, "CHUNK_CHARS", 100)
    text = "".join(f"{' ' if i % 3 else ''}line {i} ünïcode\n{'' if i % 5 else chr(10)}" for i in range(400))
    path = tmp_path / "a.txt"
    path.write_bytes(text.encode("utf-8"))
    tok = CountingTokenizer("batched", batch=True)
    ids = load_tokens(TextFile(path), tok)
    assert ids.tolist() == list(text.encode("utf-8")) and tok.batch_calls > 1
    part = TextFile(path, start=10, end=2000, max_chars=500)
    assert load_tokens(part, tok).tolist() == list(part.read().encode("utf-8"))
    assert part.read() == text.encode("utf-8")[10:2000].decode("utf-8")[:500]


def test_a_text_file_is_read_in_blocks_that_may_cut_a_character(tmp_path):
    text = "ünï€😀\n" * 300
    path = tmp_path / "u.txt"
    path.write_bytes(text.encode("utf-8"))
    blocks = list(TextFile(path).blocks(read_bytes=7))
    assert "".join(blocks) == text and len(blocks) > 100


def test_the_cheap_key_notices_a_changed_file_of_the_same_size(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("alpha beta\n" * 100)
    tok = CountingTokenizer()
    first = load_tokens(TextFile(path), tok).tolist()
    first_key = token_cache.text_key(TextFile(path))
    assert load_tokens(TextFile(path), tok).tolist() == first and tok.encode_calls == 1  # cached
    stat = path.stat()
    path.write_text("gamma delt\n" * 100)  # same size, new content, new mtime
    assert path.stat().st_size == stat.st_size
    again = load_tokens(TextFile(path), tok).tolist()
    assert tok.encode_calls == 2 and again == list(("gamma delt\n" * 100).encode())
    # Same size and the old mtime put back by hand (cp -p of another version): a sampled block differs.
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_mtime_ns == stat.st_mtime_ns and token_cache.text_key(TextFile(path)) != first_key
    path.write_text("alpha beta\n" * 100)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert token_cache.text_key(TextFile(path)) == first_key  # truly the same file again: a cache hit
    assert load_tokens(TextFile(path), tok).tolist() == first and tok.encode_calls == 2


def test_word_counts_stream_and_match_the_whole_text(tmp_path):
    text = " the cat <unk> \n\n = Title = \r\n tail\rx\u2028y words  "
    path = tmp_path / "w.txt"
    path.write_bytes(text.encode("utf-8"))
    expected = word_count(text)
    assert all(word_count_of_blocks([text[:i], text[i:]]) == expected for i in range(len(text) + 1))
    assert token_cache.count_words(TextFile(path)) == expected
    assert token_cache.count_words(TextFile(path)) == expected  # now from its cache file


def test_built_in_text_datasets_give_the_ids_of_encoding_their_text(monkeypatch):
    """The ids before this change were ``gpt2.encode(split text)`` (tests/plugins/test_tokenizers.py
    checked the old chunked path against it); the streamed path must give the same."""
    monkeypatch.setenv("BENCH_OFFLINE", "1")
    data = os.environ.get("BENCH_DATA_DIR")
    if not data or not (Path(data) / "tinyshakespeare" / "input.txt").is_file() \
            or not (Path(data) / "wikitext-2" / "valid.txt").is_file():
        pytest.skip("BENCH_DATA_DIR with tinyshakespeare and wikitext-2 not set")
    from bench_plugins import datasets, tokenizers

    gpt2 = tokenizers.gpt2()
    shakespeare = datasets.tinyshakespeare()
    content = (Path(data) / "tinyshakespeare" / "input.txt").read_bytes().decode("utf-8")
    old_splits = datasets.split_at_newlines(content, datasets.TINYSHAKESPEARE_CUTS)
    for split, old in zip(("train", "valid", "test"), old_splits):
        assert load_tokens(shakespeare.splits[split], gpt2).tolist() == gpt2.encode(old)
    valid = datasets.wikitext2().splits["valid"]
    old = (Path(data) / "wikitext-2" / "valid.txt").read_bytes().decode("utf-8")
    assert load_tokens(valid, gpt2).tolist() == gpt2.encode(old)
    assert token_cache.count_words(valid) == word_count(old)
    short = datasets.wikitext2(max_chars=5000).splits["valid"]
    assert load_tokens(short, gpt2).tolist() == gpt2.encode(old[:5000])
