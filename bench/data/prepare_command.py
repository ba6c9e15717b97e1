"""``bench data prepare``'s options turned into a :class:`bench.data.prepare.Plan` and a tokenizer.

Kept apart from :mod:`bench.commands`, which imports torch: the prepare workers are forked from
this process, and a small process forks fast and shares little."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

from bench.data.prepare import DEFAULT_SHARD_TOKENS, Plan, prepare
from bench.data.sources import HFSource, Source, expand
from bench.errors import ConfigError

_SIZE = re.compile(r"^\s*([0-9][0-9_]*(?:\.[0-9]+)?(?:e[0-9]+)?)\s*([kmgb]?)\s*$", re.IGNORECASE)
_SCALE = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "b": 10**9}


def parse_tokens(text: str) -> int:
    """``"100M"``, ``"1e8"``, ``"100_000_000"`` -> 100000000; a positive whole number of tokens."""
    match = _SIZE.match(str(text))
    value = float(match.group(1).replace("_", "")) * _SCALE[match.group(2).lower()] if match else 0
    if value < 1 or value != int(value):
        raise ConfigError(f"--shard-tokens {text!r} is not a positive number of tokens; e.g. 100M, 1e8 or 1000000")
    return int(value)


def run_prepare(*, out: str, train: list[str], valid: list[str], test: list[str], field: str, tokenizer: str,
                workers: int, shard_tokens: str, valid_docs: int, test_docs: int, hf: str | None,
                hf_split: str, plugins: Any, progress: bool = True) -> int:
    plan = make_plan(out=out, train=train, valid=valid, test=test, field=field, workers=workers,
                     shard_tokens=shard_tokens, valid_docs=valid_docs, test_docs=test_docs, hf=hf, hf_split=hf_split)
    built = build_tokenizer(tokenizer, plugins)
    for source in plan.sources.values():
        source.check()
    try:
        prepare(plan, built, progress=progress)
    except KeyboardInterrupt:
        print("\nbench: interrupted; run the same command again to resume (finished shards are kept)",
              file=sys.stderr)
        return 130
    return 0


def make_plan(*, out: str, train: list[str], valid: list[str], test: list[str], field: str, workers: int,
              shard_tokens: str, valid_docs: int, test_docs: int, hf: str | None = None,
              hf_split: str = "train") -> Plan:
    if not train and not hf:
        raise ConfigError("bench data prepare needs inputs: text, JSONL or Parquet files or folders (or --hf NAME)")
    if workers < 1:
        raise ConfigError(f"--workers {workers}: give at least 1")
    if valid_docs < 0 or test_docs < 0:
        raise ConfigError("--valid-docs and --test-docs must be >= 0")
    if (valid and valid_docs) or (test and test_docs):
        raise ConfigError("give a held-out split either its own files (--valid/--test) or a document count "
                          "(--valid-docs/--test-docs), not both")
    if hf and train:
        raise ConfigError("give train inputs either as files or as --hf NAME, not both")
    sources: dict[str, Source] = {}
    if hf:
        name, _, config = hf.partition(":")
        sources["train"] = HFSource([], field, name=name, config=config or None, split=hf_split)
    else:
        sources["train"] = Source(expand(train), field)
    for split, names in (("valid", valid), ("test", test)):
        if names:
            sources[split] = Source(expand(names), field)
    holdout = {split: n for split, n in (("valid", valid_docs), ("test", test_docs)) if n}
    return Plan(Path(out).expanduser(), sources, holdout, parse_tokens(shard_tokens), workers)


def build_tokenizer(name: str, plugins: Any) -> Any:
    """The named tokenizer plugin, built with its defaults and made to load its files now."""
    from bench.registry import load_plugins

    component = load_plugins(plugins).registry.get("tokenizer", name)
    tokenizer = component.build(component.defaults)
    tokenizer.encode("")  # a tokenizer that loads lazily (gpt2) reads its files before any worker forks
    return tokenizer


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


__all__ = ["DEFAULT_SHARD_TOKENS", "parse_tokens", "run_prepare", "make_plan", "build_tokenizer", "default_workers"]
