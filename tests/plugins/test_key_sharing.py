"""No two built-in components that can meet in one cell share a key by accident.

A cell has one value per key: when a model, optimizer, dataset, tokenizer and schedule declare the
same key they share one value (bench.hookspecs, "Components and their keys"). Shared by accident
that either refuses the cell (different defaults: AdEMAMix's ``alpha`` and the synthetic dataset's
``alpha`` could never run together) or silently sets two things at once (a matrix's ``warmup_steps``
warming Schedule-Free up twice). Components of one kind never meet (a cell has one optimizer), so
only pairs across kinds are checked.
"""

from __future__ import annotations

import itertools

from bench.cells import KIND_KEYS
from bench.provenance import DISTRIBUTION
from bench.registry import PluginSelection, load_plugins

# (key, kind, kind) in sorted kind order -> why sharing one value is the point; every other shared key
# is a clash. None today: lr, betas, eps, weight_decay, momentum are shared only among optimizers (one
# per cell), warmup_steps and min_lr_fraction only among schedules; harness keys such as lr reach a
# schedule by name, not by declaration.
INTENDED: dict[tuple[str, str, str], str] = {}


def _builtins() -> dict[str, list]:
    registry = load_plugins(PluginSelection(autoload=False), warn=lambda line: None).registry
    return {kind: [e for e in registry.entries(kind) if e.provider.distribution == DISTRIBUTION] for kind in KIND_KEYS}


def _shared_keys() -> list[tuple[str, str, str, str, str, object, object]]:
    found = []
    by_kind = _builtins()
    for kind_a, kind_b in itertools.combinations(sorted(by_kind), 2):
        for a, b in itertools.product(by_kind[kind_a], by_kind[kind_b]):
            for key in sorted(set(a.component.defaults) & set(b.component.defaults)):
                found.append((key, kind_a, a.component.name, kind_b, b.component.name,
                              a.component.defaults[key], b.component.defaults[key]))
    return found


def test_every_kind_has_builtins():
    # The check below means nothing if the built-ins did not load.
    assert all(_builtins().values())


def test_components_of_different_kinds_share_only_intended_keys():
    clashes = [f"{kind_a} {a!r} and {kind_b} {b!r} both declare {key!r} (defaults {da!r}, {db!r})"
               for key, kind_a, a, kind_b, b, da, db in _shared_keys()
               if (key, kind_a, kind_b) not in INTENDED]
    assert not clashes, "\n".join(clashes)


def test_intended_sharing_is_still_there():
    # An entry nobody needs any more would hide a future clash of that key.
    shared = {(key, kind_a, kind_b) for key, kind_a, _, kind_b, *_ in _shared_keys()}
    assert set(INTENDED) <= shared
