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


def test_on_the_cpu_token_splits_are_used_in_place_not_copied(tmp_path):
    import numpy as np
    import torch

    from bench.data.loading import load_cell_data
    from bench.data.shards import HostTokens
    from bench_plugins.token_files import write_llmc_shard

    write_llmc_shard(tmp_path / "train.bin", np.arange(5000) % 100)
    registry = build_registry(plugin_manager())
    config = resolve_config({"model": "gpt1", "optimizer": "adamw", "dataset": "token-files",
                             "train": str(tmp_path / "train.bin"), "vocab_size": 100}, registry, "test")
    data = load_cell_data(config, registry, torch.device("cpu"))
    for split in data.splits.values():
        assert isinstance(split, HostTokens)
        assert all(isinstance(a, np.memmap) and a.dtype == np.uint16 for a in split.arrays), "mapped, not copied"
    synthetic = resolve_config({"model": "gpt1", "optimizer": "adamw"}, registry, "test")
    for split in load_cell_data(synthetic, registry, torch.device("cpu")).splits.values():
        assert [a.dtype for a in split.arrays] == [np.uint16], "a plugin's array is not widened (copied)"


def test_on_cuda_a_corpus_over_the_device_share_stays_on_the_host(monkeypatch):
    import numpy as np
    import torch

    from bench.data import loading
    from bench.data.shards import HostTokens, TokenShards, split_tokens

    splits = {s: split_tokens(TokenShards([np.zeros(1000, dtype=np.uint16)])) for s in ("train", "valid", "test")}
    # The device's free memory is the condition under test: 4 x 3000 bytes needed, 47,000 free.
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (47_000, 10**9))
    placed = loading.place_splits(splits, torch.device("cuda"))
    assert all(isinstance(s, HostTokens) for s in placed.values())
