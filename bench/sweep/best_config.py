"""`bench report --best-config FILE`: the best trial of each sweep group as a plain matrix file.

The file is short and reruns nothing the sweep already finished:

* it sets only the keys whose values differ from what the cells would get anyway (the harness
  defaults in bench/schema.py and the defaults their components declare), and is checked, before
  it is written, to resolve to exactly the cells it stands for (same configs, same ids);
* each cell keeps the name the sweep gave it (``gpt1-adamw-lr=0.0125-seed1``), written as its
  include's ``name``;
* its ``name`` is the sweep's own matrix name, so `bench run` on it uses the sweep's store
  (``outputs/<sweep>/``). `bench run` skips a settled cell whose id is in its store, so the final-seed
  cells (or, without final seeds, the best trials) the sweep finished are reused as they are. Why
  not a store of its own with the results copied in: a copy is a second record of one result, which
  a report over every matrix would show twice and a retrain would let drift apart; here each
  result stays one folder. A cell the sweep has not finished (one stopped before its final seeds)
  trains into the sweep's store, where the resumed sweep finds it. Changing the file's ``name``
  gives it a store of its own, where everything trains again.
"""

from __future__ import annotations

import json
import math
import tomllib
from dataclasses import dataclass
from typing import Any

from bench.cells import cell_id, declared_defaults, resolve_cells, resolve_config
from bench.errors import BenchError
from bench.matrix import parse_matrix
from bench.registry import Registry
from bench.store import ResultStore
from bench.sweep.groups import final_name, trial_name
from bench.sweep.report import GroupView, best_overall, load_groups, metric_name
from bench.sweep.trials import WARM

# Not cell keys of the file: the seeds are its `seeds`, halt_at_step is where a Hyperband rung paused.
OMIT = ("seed", "halt_at_step")


@dataclass
class Best:
    """One group's best configuration as the file states it."""

    name: str  # the cells' name; "{seed}" stands for each seed
    config: dict[str, Any]  # every key the cell sets, but its seed (the trial's config + final_overrides)
    ids: list[str]  # the cells it stands for, one per seed
    trial_seed: int  # the seed its trial trained with


def best_config_toml(store: ResultStore, registry: Registry) -> str:
    """The file's text; "" when no group has a finished trial yet."""
    groups = load_groups(store)
    if not groups:
        return ""
    settings = groups[0].settings
    seeds = list(settings.get("final_seeds") or [])
    bests = [b for b in (_best(store, groups, label, seeds, registry) for label in _labels(groups)) if b]
    if not bests:
        return ""
    seeds = seeds or [bests[0].trial_seed]  # no final seeds: the best trials themselves
    shortest = [_differing(b.config, registry) for b in bests]
    text = _text(store, settings, seeds, bests, shortest)
    _check_same_cells(text, bests, registry)
    return text


def _labels(groups: list[GroupView]) -> list[str]:
    return list(dict.fromkeys(g.group for g in groups))  # a group with several studies once


def _best(store: ResultStore, groups: list[GroupView], label: str, seeds: list[int],
          registry: Registry) -> Best | None:
    row = best_overall(groups, label)
    if row is None:
        return None
    # A warm-start trial's cell lives in the store of the matrix it came from.
    source = ResultStore(store.root, row.attrs["matrix"]) if row.attrs.get(WARM) else store
    record = source.cell(row.attrs["cell_id"])
    stored = record.read_config()  # a damaged one is warned about and set aside
    if stored is None:
        raise BenchError(f"the best trial's config.json in {record.path} is missing or damaged; "
                         "run the sweep again to retrain that trial")
    settings = next(g.settings for g in groups if g.group == label)
    trial = stored["config"]
    config = {k: v for k, v in trial.items() if k not in OMIT and v is not None}
    name = trial_name(trial, row.params)
    if seeds:  # the final reruns: the trial with final_overrides, named as the sweep named them
        overrides = settings.get("final_overrides") or {}
        config.update(overrides)
        name = final_name(name, "{seed}", bool(overrides))
    where = f"sweep {store.path.name!r}, best of group {label}"
    ids = [cell_id(resolve_config({**config, "seed": s}, registry, where)) for s in seeds or [trial["seed"]]]
    return Best(name, config, ids, trial["seed"])


def _differing(config: dict[str, Any], registry: Registry) -> dict[str, Any]:
    """The keys of ``config`` a matrix must set: those whose values are not the defaults the cell
    would get anyway. Compared as JSON, as the cell id hashes them (0 and 0.0 differ there)."""
    defaults = declared_defaults(config, registry)
    return {k: v for k, v in config.items() if k not in defaults or not _same(v, defaults[k])}


def _text(store: ResultStore, settings: dict[str, Any], seeds: list[int], bests: list[Best],
          shortest: list[dict[str, Any]]) -> str:
    common = {k: v for k, v in shortest[0].items()
              if all(k in c and _same(c[k], v) for c in shortest)}
    lines = [f"# The best configuration of each group of sweep {store.path.name!r} by {metric_name(settings)}: only",
             "# the keys that differ from the defaults. Named after the sweep, so `bench run` on this file uses",
             "# the sweep's store and reuses the cells the sweep already trained (same ids); change `name`",
             "# to give it a store of its own (everything then trains again).",
             f"name = {json.dumps(store.path.name)}", f"seeds = {_toml_value(seeds)}", "", "[defaults]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in sorted(common.items())]
    entries = []
    for best, config in zip(bests, shortest):
        own = [f"{k} = {_toml_value(v)}" for k, v in sorted(config.items()) if k not in common]
        entries.append(f"    {{ {', '.join([f'name = {json.dumps(best.name)}', *own])} }},")
    lines += ["", "[matrix]", "include = [", *entries, "]"]
    return "\n".join(lines) + "\n"


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _toml_value(value: Any) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return json.dumps(value)  # JSON strings, numbers, booleans and flat arrays are valid TOML


def _check_same_cells(text: str, bests: list[Best], registry: Registry) -> None:
    """The written file must stand for exactly the best cells: a key left out that changes a cell
    would give it a new id, and `bench run` would train it again instead of reusing it."""
    matrix = parse_matrix(tomllib.loads(text), default_name="best", where="the best configuration")
    got = [c.id for c in resolve_cells(matrix, registry)]
    wanted = [i for b in bests for i in b.ids]
    if sorted(got) != sorted(wanted):
        raise BenchError(f"the best configuration would resolve to cells {', '.join(got)} instead of "
                         f"{', '.join(wanted)}; please report this as a bug in `bench report --best-config`")
