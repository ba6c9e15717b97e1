"""bench: compare language-model architectures and optimizers from one matrix file.

Everything a plugin needs is importable from here; :mod:`bench.hookspecs` is the contract."""

from __future__ import annotations

import importlib
from importlib import metadata
from typing import Any

from bench.components import Component
from bench.hookspecs import PLUGIN_API_VERSION, hookimpl

__all__ = ["PLUGIN_API_VERSION", "Component", "Corpus", "LanguageModel", "TextFile", "TokenShards", "Tokenizer",
           "hookimpl"]

try:  # the installed distribution's version: one number, kept in pyproject.toml
    __version__ = metadata.version("bench-lm")
except metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

# Imported on first use, so `bench --help` and other torch-free paths stay fast.
_LAZY = {"LanguageModel": "bench.lm", "Corpus": "bench.data.corpus", "TextFile": "bench.data.corpus",
         "Tokenizer": "bench.data.tokenizer", "TokenShards": "bench.data.shards"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'bench' has no attribute {name!r}")
