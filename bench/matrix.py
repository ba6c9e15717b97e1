"""Read a matrix file and expand it into cell configurations (plain dicts).

The grid follows GitHub Actions matrix semantics: the cartesian product of the axes in
``[matrix]``; each ``exclude`` entry removes the combinations that match all of its keys;
each ``include`` entry is then merged into every combination whose original axis values
it does not overwrite, and becomes a combination of its own if it fits none.

An ``include`` entry may carry ``name``, the name of its cells instead of one built from the axes
(``{seed}`` in it is replaced by each cell's seed): `bench report --best-config` writes the names
the sweep gave its cells this way.
"""

from __future__ import annotations

import difflib
import itertools
import tomllib
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from bench.errors import ConfigError
from bench.limits import check_cell_count, seed_problem

TOP_LEVEL_KEYS = ("name", "description", "seeds", "defaults", "matrix", "eval", "executor", "sweep", "max_cells")
EVAL_KEYS = {"hellaswag": False, "limit": 0, "batch_size": 16, "log_samples": False}
# Arrays and tables inside each other: [matrix] include = [{ key = [..] }] is 4 levels.
MAX_DEPTH = 16
CELL_NAME = "name"  # in an include entry: the name of its cells, not a config key
# The name is a folder under the outputs root; 100 characters leave room for the rest of a path.
MAX_NAME_LENGTH = 100
# What users bring from other frameworks (nanoGPT, Hugging Face, PyTorch) for bench's keys:
# spelling-based matching cannot see that `learning_rate` means `lr`.
SYNONYMS = {
    "learning_rate": "lr", "learningrate": "lr",
    "num_layers": "n_layer", "n_layers": "n_layer", "num_hidden_layers": "n_layer", "layers": "n_layer",
    "num_heads": "n_head", "n_heads": "n_head", "num_attention_heads": "n_head",
    "d_model": "n_embd", "hidden_size": "n_embd", "embed_dim": "n_embd", "n_embed": "n_embd",
    "block_size": "seq_len", "context_length": "seq_len", "max_seq_len": "seq_len", "seq_length": "seq_len",
    "max_iters": "max_steps", "num_steps": "max_steps", "steps": "max_steps",
    "gradient_accumulation_steps": "grad_accum", "num_epochs": "epochs",
    "eval_interval": "eval_every", "log_interval": "log_every", "optim": "optimizer", "lr_schedule": "schedule",
    "scheduler": "schedule", "arch": "model",
}


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
    executor: dict[str, Any] = field(default_factory=dict)  # [executor]: name and options (bench.executors)
    names: list[str | None] = field(default_factory=list)  # per combination: its include's `name`, if any


def closest(word: str, candidates: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the candidate ``word`` most likely stands for, else ``""``."""
    candidates = list(candidates)
    synonym = SYNONYMS.get(word.lower())
    if synonym in candidates:
        return f"; did you mean {synonym!r}?"
    match = difflib.get_close_matches(word, candidates, n=1, cutoff=0.5)
    return f"; did you mean {match[0]!r}?" if match else ""


def load_matrix(path: str | Path) -> Matrix:
    path = Path(path)
    if path.is_dir():
        inside = sorted(p.name for p in path.glob("*.toml"))
        example = f", e.g. {inside[0]}" if inside else ""
        raise ConfigError(f"matrix file {str(path)!r} is a directory; give a .toml file in it{example}")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"matrix file {str(path)!r} does not exist; check the path") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"cannot read matrix file {str(path)!r}: {exc.strerror}; check the path") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: malformed TOML: {exc}; fix the syntax at that line") from None
    except RecursionError:  # tomllib parses nested arrays and inline tables recursively
        raise ConfigError(f"{path}: arrays or tables nested too deeply for the TOML parser; a matrix needs at "
                          f"most {MAX_DEPTH} levels") from None
    check_depth(raw, str(path))
    return parse_matrix(raw, default_name=path.stem, where=str(path))


def check_depth(raw: dict[str, Any], where: str) -> None:
    """Refuse values nested deeper than MAX_DEPTH before anything walks them recursively (cell ids,
    messages, deep copies would hit Python's recursion limit). Iterative, so it cannot itself."""
    stack: list[tuple[Any, int, str]] = [(raw, 0, "")]
    while stack:
        value, depth, key = stack.pop()
        if depth > MAX_DEPTH:
            raise ConfigError(f"{where}: {key} nests arrays or tables more than {MAX_DEPTH} levels "
                              "deep; a matrix needs a few levels (e.g. include = [{ model = \"gpt1\" }])")
        children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        for child_key, child in children:
            named = f"{key}.{child_key}" if key.count(".") < 1 and isinstance(child_key, str) else key
            stack.append((child, depth + 1, named.lstrip(".")))


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
        if all(isinstance(v, dict) for v in values):  # an axis of tables is a misspelt include/exclude
            raise ConfigError(f"{where}: matrix axis {axis!r} holds tables{closest(axis, ('include', 'exclude'))} "
                              "(axes hold values; include and exclude hold tables)")
    evaluation = dict(EVAL_KEYS)
    for key, value in _table(raw, "eval", where).items():
        if key not in EVAL_KEYS:
            raise ConfigError(f"{where}: unknown key eval.{key}{closest(key, EVAL_KEYS)}")
        evaluation[key] = value
    seeds = raw.get("seeds", [defaults.get("seed", 0)])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool)
                                                           for s in seeds):
        raise ConfigError(f"{where}: seeds must be a non-empty list of integers, got {_abbreviated(seeds)}")
    for seed in seeds:
        if seed_problem(seed):
            raise ConfigError(f"{where}: {seed_problem(seed)}")
    name = raw.get("name", default_name)
    problem = _name_problem(name)
    if problem:
        raise ConfigError(f"{where}: name {_abbreviated(name)} {problem}; results go to outputs/<name>/, "
                          "so use a short plain folder name like \"hw3\"")
    check_cell_count(grid, include, seeds, raw.get("max_cells"), where)  # before the grid exists
    combinations = expand_grid(grid, include, exclude)
    if not combinations:
        raise ConfigError(f"{where}: the matrix expands to no cells; check [matrix] and exclude")
    names = _cell_names(combinations, where)
    return Matrix(name, str(raw.get("description", "")), defaults, combinations, seeds, evaluation,
                  axes=list(dict.fromkeys([*grid, *(k for e in include for k in e if k != CELL_NAME)])),  # each once
                  executor=dict(_table(raw, "executor", where)),
                  sweep=dict(_table(raw, "sweep", where)), names=names)


def _cell_names(combinations: list[dict[str, Any]], where: str) -> list[str | None]:
    """Take each combination's ``name`` (an include's) out of its keys: it names cells, it sets nothing."""
    names = [combo.pop(CELL_NAME, None) for combo in combinations]
    for given in names:
        if given is not None and (not isinstance(given, str) or not given.strip()):
            raise ConfigError(f"{where}: matrix.include name = {_abbreviated(given)} must be non-empty text, "
                              "e.g. name = \"gpt1-adamw-lr=0.0125\"")
    twice = next((n for n in names if n is not None and names.count(n) > 1), None)
    if twice is not None:
        raise ConfigError(f"{where}: several matrix cells are named {twice!r} (an include's name applies to every "
                          "combination it merges into); give each include its own name")
    return names


def _name_problem(name: object) -> str | None:
    if not isinstance(name, str):
        return f"is {type(name).__name__}, not a string"
    if not name or name.startswith("."):
        return "is empty or starts with '.'"
    control = next((c for c in name if unicodedata.category(c) == "Cc"), None)
    if control is not None:
        return f"contains the control character {control!r}"
    if "/" in name or "\\" in name:
        return "contains a path separator"
    if len(name) > MAX_NAME_LENGTH:
        return f"is {len(name)} characters long; the limit is {MAX_NAME_LENGTH}"
    return None


def _abbreviated(value: object, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}...'"


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
