"""The built-in tokenizers: registration, round trips, and GPT-2's special-token handling."""

from __future__ import annotations

import os
from pathlib import Path

import pluggy
import pytest

from bench import hookspecs
from bench.data.token_cache import load_tokens, split_for_batch
from bench.data.tokenizer import Tokenizer
from bench.errors import DataMissingError
from bench.testing import parametrize_with_checks
from bench_plugins import tokenizers


def _registered() -> dict:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.register(tokenizers)
    return {c.name: c for batch in pm.hook.bench_tokenizers() for c in batch}


@pytest.fixture(scope="module")
def gpt2():
    """GPT-2 from the BPE files in TIKTOKEN_CACHE_DIR (set by the test runner); never downloads."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENCH_OFFLINE", "1")
        try:
            return tokenizers.gpt2()
        except DataMissingError as exc:
            pytest.skip(f"gpt2 BPE files unavailable: {exc}")


@parametrize_with_checks(tokenizers=tokenizers.bench_tokenizers())
def test_contract(check, monkeypatch):
    monkeypatch.setenv("BENCH_OFFLINE", "1")  # gpt2 reads TIKTOKEN_CACHE_DIR; without the files it skips
    check()


def test_registers_gpt2_and_byte():
    components = _registered()
    assert set(components) == {"gpt2", "byte"}
    assert all(c.defaults == {} for c in components.values())  # factory() takes no arguments


def test_byte_tokenizer_round_trips_utf8():
    tok = _registered()["byte"].factory()
    assert isinstance(tok, Tokenizer)
    assert (tok.name, tok.vocab_size, tok.eot_token) == ("byte", 256, None)
    text = "naïve café — 東京\n"
    ids = tok.encode(text)
    assert ids == list(text.encode("utf-8")) and max(ids) < 256
    assert tok.decode(ids) == text
    assert tok.encode_batch(["a", "bc"]) == [[97], [98, 99]]
    assert tok.decode(ids[:-2] + [0xE6]).endswith("\ufffd")  # a cut character does not raise


def test_gpt2_basics(gpt2):
    assert isinstance(gpt2, Tokenizer)
    assert (gpt2.name, gpt2.vocab_size, gpt2.eot_token) == ("gpt2", 50257, 50256)
    ids = gpt2.encode("Hello world")
    assert ids == [15496, 995]
    assert gpt2.decode(ids) == "Hello world"


def test_gpt2_treats_endoftext_in_text_as_ordinary_text(gpt2):
    ids = gpt2.encode("a<|endoftext|>b")
    assert 50256 not in ids and len(ids) > 3
    assert gpt2.decode(ids) == "a<|endoftext|>b"
    assert gpt2.encode_batch(["x <|endoftext|>", "y"]) == [gpt2.encode("x <|endoftext|>"), gpt2.encode("y")]


TRICKY = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n"
    " = Valkyria Chronicles III = \n \n Senjō no Valkyria 3 : <unk> Chronicles \n"
    "trailing spaces   \n\tindented by tab\n  two spaces\n'quoted' line\n123 numbers\n"
    "\n\n\nblank lines above\r\nwindows line\r\n ends \n\n"
)


def test_gpt2_chunked_encoding_equals_whole_encoding(gpt2):
    text = TRICKY * 50
    pieces = split_for_batch(text, chunk_chars=40)
    assert len(pieces) > 50
    batched = [i for ids in gpt2.encode_batch(pieces) for i in ids]
    assert batched == gpt2.encode(text)


def test_gpt2_token_cache_matches_plain_encode_on_real_text(gpt2, tmp_path, monkeypatch):
    data = os.environ.get("BENCH_DATA_DIR")
    source = Path(data) / "tinyshakespeare" / "input.txt" if data else None
    if source is None or not source.is_file():
        pytest.skip("BENCH_DATA_DIR with tinyshakespeare/input.txt not set")
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path))
    text = source.read_text(encoding="utf-8")  # 1.1 MB: several batch chunks
    ids = load_tokens(text, gpt2)
    assert ids.dtype.name == "uint16"
    assert ids.tolist() == gpt2.encode(text)


def test_gpt2_without_cached_files_offline_says_what_to_set(tmp_path, monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("BENCH_OFFLINE", "1")
    with pytest.raises(DataMissingError) as info:
        tokenizers.gpt2()
    msg = str(info.value)
    assert "TIKTOKEN_CACHE_DIR" in msg and str(tmp_path / "empty") in msg and "\n" not in msg
    assert "6d1cbeee0f20b3d9449abfede4726ed8212e3aee" in msg  # the cache name of vocab.bpe


def test_gpt2_reads_its_bpe_files_only_when_it_encodes(monkeypatch):
    # A fault injected where tiktoken loads the files: building must not reach it, encoding must.
    import tiktoken

    calls = []

    def unreadable(name):
        calls.append(name)
        raise OSError("cache file unreadable")

    monkeypatch.setattr(tiktoken, "get_encoding", unreadable)
    monkeypatch.delenv("BENCH_OFFLINE", raising=False)
    tok = tokenizers.gpt2()
    assert (tok.vocab_size, tok.eot_token) == (50257, 50256) and calls == []
    with pytest.raises(DataMissingError, match="could not load tiktoken's BPE files .OSError: cache file unreadable"):
        tok.encode("x")
    assert calls == ["gpt2"]


def test_gpt2_declared_sizes_are_the_encodings(gpt2):
    import tiktoken

    encoding = tiktoken.get_encoding("gpt2")
    assert (gpt2.vocab_size, gpt2.eot_token) == (encoding.n_vocab, encoding.eot_token)
