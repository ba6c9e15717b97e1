"""Read a matrix file and expand it into cell configurations (plain dicts).

The grid follows GitHub Actions matrix semantics: the cartesian product of the axes in
``[matrix]``; each ``exclude`` entry removes the combinations that match all of its keys;
each ``include`` entry is then merged into every combination whose original axis values
it does not overwrite, and becomes a combination of its own if it fits none.
"""

from __future__ import annotations

import difflib
import itertools
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import ConfigError

TOP_LEVEL_KEYS = ("name", "description", "seeds", "defaults", "matrix", "eval", "sweep")
EVAL_KEYS = {"hellaswag": False, "limit": 0, "batch_size": 16}


@dataclass
class Matrix:
    name: str
    description: str
    defaults: dict[str, Any]
    combinations: list[dict[str, Any]]
    seeds: list[int]
    evaluation: dict[str, Any] = field(default_factory=dict)
    axes: list[str] = field(default_factory=list)
    sweep: dict[str, Any] = field(default_factory=dict)  # the raw [sweep] table; bench.sweep.spec reads it


def closest(word: str, candidates) -> str:
    match = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.5)
    return f"; did you mean {match[0]!r}?" if match else ""


def load_matrix(path: str | Path) -> Matrix:
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"matrix file {str(path)!r} does not exist; check the path") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: malformed TOML: {exc}; fix the syntax at that line") from None
    return parse_matrix(raw, default_name=path.stem, where=str(path))


def parse_matrix(raw: dict[str, Any], *, default_name: str, where: str) -> Matrix:
    for key in raw:
        if key not in TOP_LEVEL_KEYS:
            raise ConfigError(f"{where}: unknown top-level key {key!r}{closest(key, TOP_LEVEL_KEYS)} "
                              f"(allowed: {', '.join(TOP_LEVEL_KEYS)})")
    defaults = _table(raw, "defaults", where)
    grid = dict(_table(raw, "matrix", where))
    include = _entries(grid.pop("include", []), "matrix.include", where)
    exclude = _entries(grid.pop("exclude", []), "matrix.exclude", where)
    for axis, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}: matrix axis {axis!r} must be a non-empty list, got {values!r}")
    evaluation = dict(EVAL_KEYS)
    for key, value in _table(raw, "eval", where).items():
        if key not in EVAL_KEYS:
            raise ConfigError(f"{where}: unknown key eval.{key}{closest(key, EVAL_KEYS)}")
        evaluation[key] = value
    seeds = raw.get("seeds", [defaults.get("seed", 0)])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool)
                                                           for s in seeds):
        raise ConfigError(f"{where}: seeds must be a non-empty list of integers, got {seeds!r}")
    name = raw.get("name", default_name)
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        raise ConfigError(f"{where}: name must be a plain folder name, got {name!r}")
    combinations = expand_grid(grid, include, exclude)
    if not combinations:
        raise ConfigError(f"{where}: the matrix expands to no cells; check [matrix] and exclude")
    return Matrix(name, str(raw.get("description", "")), defaults, combinations, seeds, evaluation,
                  axes=list(grid) + [k for e in include for k in e if k not in grid],
                  sweep=dict(_table(raw, "sweep", where)))


def _table(raw: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: [{key}] must be a table, got {type(value).__name__}")
    return value


def _entries(value: Any, key: str, where: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ConfigError(f"{where}: {key} must be a list of tables like {{ model = \"lstm\" }}")
    return value


def expand_grid(axes: dict[str, list], include: list[dict], exclude: list[dict]) -> list[dict[str, Any]]:
    names = list(axes)
    if not names and not include:
        return [{}]  # no grid at all: one cell made of the defaults
    product = [dict(zip(names, values)) for values in itertools.product(*axes.values())] if names else []
    product = [c for c in product if not any(_matches(c, e) for e in exclude)]
    original = [dict(c) for c in product]
    added: list[dict[str, Any]] = []
    for extra in include:
        merged_somewhere = False
        for combo, base in zip(product, original):
            # An include may add keys to a combination or overwrite keys that earlier includes
            # added, but never change one of the combination's own axis values. Combinations
            # that includes created themselves are not merge targets.
            if all(base[k] == v for k, v in extra.items() if k in base):
                combo.update(extra)
                merged_somewhere = True
        if not merged_somewhere:
            added.append(dict(extra))
    return product + added


def _matches(combo: dict[str, Any], pattern: dict[str, Any]) -> bool:
    return all(combo.get(k) == v for k, v in pattern.items())
