"""Opening a matrix's data up front: one line naming the problem, before any cell starts."""

from __future__ import annotations

import pytest

from bench.cells import resolve_config
from bench.data.loading import check_data_available
from bench.errors import DataMissingError
from bench.registry import build_registry, plugin_manager


def test_an_unreadable_tokenizer_file_fails_the_command_up_front(monkeypatch):
    import tiktoken

    def unreadable(name):
        raise OSError("cache file unreadable")

    monkeypatch.setattr(tiktoken, "get_encoding", unreadable)  # the fault, around the real tokenizer
    monkeypatch.delenv("BENCH_OFFLINE", raising=False)
    registry = build_registry(plugin_manager())
    config = resolve_config({"model": "gpt1", "optimizer": "adamw", "dataset": "tinyshakespeare", "tokenizer": "gpt2"},
                            registry, "test")
    try:
        registry.get("dataset", "tinyshakespeare").build(config)
    except DataMissingError:
        pytest.skip("tinyshakespeare is not in BENCH_DATA_DIR")
    with pytest.raises(DataMissingError) as info:
        check_data_available([config], registry)
    message = str(info.value)
    assert message.startswith("tokenizer 'gpt2' could not load tiktoken's BPE files (OSError")
    assert "TIKTOKEN_CACHE_DIR" in message and "\n" not in message
