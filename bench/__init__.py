"""bench: compare language-model architectures and optimizers from one matrix file.

Everything a plugin needs is importable from here; :mod:`bench.hookspecs` is the contract."""

from __future__ import annotations

import importlib
from typing import Any

from bench.components import Component
from bench.hookspecs import hookimpl

__all__ = ["Component", "Corpus", "LanguageModel", "TextFile", "TokenShards", "Tokenizer", "hookimpl"]
__version__ = "0.1.0"

# Imported on first use, so `bench --help` and other torch-free paths stay fast.
_LAZY = {"LanguageModel": "bench.lm", "Corpus": "bench.data.corpus", "TextFile": "bench.data.corpus",
         "Tokenizer": "bench.data.tokenizer", "TokenShards": "bench.data.shards"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'bench' has no attribute {name!r}")
