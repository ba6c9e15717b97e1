"""Turn a cell's dataset + tokenizer settings into the token splits a cell trains and evaluates on.

Where the splits live (see :mod:`bench.data.shards`):

* on the CPU, the arrays are used as the dataset returned them: a memory-mapped file stays mapped
  (its pages are the page cache's, not the process's), a plugin's array is not copied or widened;
* on CUDA, all splits are copied to the device as one ``int32`` tensor each when together they
  take at most :data:`DEVICE_SHARE` of the device's free memory and ``pin_memory`` is off (batches
  are then gathered on the device, as bench always did); otherwise they stay on the host and each
  training batch is gathered there and copied from pinned memory one step ahead
  (:mod:`bench.data.prefetch`).

The batches are the same either way: only where they are gathered changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch

from bench.data.corpus import SPLITS, Corpus, TextFile
from bench.data.shards import SplitTokens, TokenShards, split_tokens, to_device
from bench.data.token_cache import count_words, load_tokens, word_count_of_blocks
from bench.errors import BenchError, ConfigError
from bench.registry import Registered, Registry


@dataclass
class CellData:
    splits: dict[str, SplitTokens]
    vocab_size: int
    entropy_rate: float | None
    text: bool
    tokenizer: Any | None
    words: dict[str, int] | None = None  # word count per split, for word-level corpora (tag "words")


def load_cell_data(config: dict[str, Any], registry: Registry, device: torch.device) -> CellData:
    dataset = registry.get("dataset", config["dataset"])
    corpus: Corpus = dataset.build(config)
    tokenizer = None
    arrays: dict[str, np.ndarray | TokenShards]
    if corpus.is_text:
        tokenizer_component = registry.get("tokenizer", config["tokenizer"])
        tokenizer = tokenizer_component.build(config)
        arrays = {split: load_tokens(cast("str | TextFile", corpus.splits[split]), tokenizer,
                                     label=f"{dataset.name} {split}") for split in SPLITS}
        vocab_size = tokenizer.vocab_size
    else:
        arrays = {split: _as_ids(corpus.splits[split]) for split in SPLITS}
        vocab_size = int(cast(int, corpus.vocab_size))  # Corpus requires it of token corpora
    splits = place_splits({split: split_tokens(a) for split, a in arrays.items()}, device,
                          keep_on_host=bool(config.get("pin_memory")))
    words = {split: count_words(cast("str | TextFile", corpus.splits[split])) for split in SPLITS} \
        if corpus.is_text and "words" in dataset.tags else None
    return CellData(splits, vocab_size, corpus.entropy_rate, corpus.is_text, tokenizer, words)


DEVICE_SHARE = 0.25  # of the device's free memory that token splits may take when copied to it


def _as_ids(split: Any) -> np.ndarray | TokenShards:
    return split if isinstance(split, TokenShards) else np.asarray(split)


def place_splits(splits: dict[str, SplitTokens], device: torch.device, *, keep_on_host: bool = False
                 ) -> dict[str, SplitTokens]:
    """The splits where batches will be gathered: see the module docstring. ``keep_on_host``
    (``pin_memory = true``) keeps the train split on the host whatever its size."""
    if device.type != "cuda":
        return dict(splits)
    moving = [name for name in splits if not (keep_on_host and name == "train")]
    needed = sum(4 * splits[name].numel() for name in moving)  # int32 on the device
    free, _ = torch.cuda.mem_get_info(device)
    if needed > DEVICE_SHARE * free:
        return dict(splits)
    return {name: to_device(s, device) if name in moving else s for name, s in splits.items()}


def word_count(text: str) -> int:
    """Words as word-level language modelling counts them: whitespace-separated tokens plus one
    end-of-line per line (the pytorch/examples convention for WikiText-2), so that per-word
    perplexity, exp(total NLL / words), compares with word-level results in the literature."""
    return word_count_of_blocks([text])


def data_key(config: dict[str, Any], registry: Registry) -> tuple:
    """What decides a cell's token arrays: its dataset, the dataset's settings and its tokenizer."""
    dataset = registry.get("dataset", config["dataset"])
    return dataset.name, repr(sorted(dataset.params(config).items())), config["tokenizer"]


def data_problems(configs: list[dict[str, Any]], registry: Registry) -> dict[tuple, str]:
    """Open every distinct dataset and tokenizer the cells use, before any cell starts.

    Missing files, or a dataset refusing its settings, are the user's to fix: they raise (the
    command stops with one line, exit 2) instead of failing cell after cell. A plugin that crashes
    is returned as the problem of its :func:`data_key`: only the cells using it fail."""
    problems: dict[tuple, str] = {}
    seen = set()
    for config in configs:
        key = data_key(config, registry)
        if key not in seen:
            seen.add(key)
            problem = _open_data(config, registry)
            if problem:
                problems[key] = problem
    return problems


def check_data_available(configs: list[dict[str, Any]], registry: Registry) -> None:
    """:func:`data_problems`, with a crashing plugin stopping the command too (one line, exit 2)."""
    for problem in data_problems(configs, registry).values():
        raise ConfigError(problem)


def _open_data(config: dict[str, Any], registry: Registry) -> str | None:
    dataset = registry.get("dataset", config["dataset"])
    try:
        dataset.build(config)
    except ValueError as exc:
        raise ConfigError(f"dataset {dataset.name!r}: {exc}") from None
    except BenchError:  # missing files: the plugin's own line names the fix
        raise
    except Exception as exc:  # noqa: BLE001 - a plugin's bug: one line naming it, not a traceback
        return _plugin_failed(registry.entry("dataset", dataset.name), exc)
    if config["tokenizer"] is None:
        return None
    tokenizer = registry.get("tokenizer", config["tokenizer"])
    try:
        # Encoding makes a tokenizer that loads its files lazily (gpt2) read them now.
        tokenizer.build(config).encode("")
    except BenchError:
        raise
    except Exception as exc:  # noqa: BLE001 - as above
        return _plugin_failed(registry.entry("tokenizer", tokenizer.name), exc)
    return None


def _plugin_failed(entry: Registered, exc: Exception) -> str:
    failure = f"{entry.kind} {entry.component.name!r} from {entry.distribution} failed to load: " \
              f"{type(exc).__name__}: {exc}"
    return failure.splitlines()[0][:400] + "; fix or turn off the plugin (--disable-plugin NAME)"
