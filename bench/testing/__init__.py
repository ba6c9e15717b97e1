"""The conformance kit: every check of the plugin contract, as one pytest test each.

In the spirit of scikit-learn's ``parametrize_with_checks``: one decorator turns every check of
every component you name into its own test, with an id like ``gru-check_causality_train`` and a
one-paragraph failure that says what the component did and what the contract wants::

    from bench.testing import parametrize_with_checks
    from my_plugin import GRU, LION      # your bench.Component objects

    @parametrize_with_checks(models=[(GRU, {"n_embd": 16, "n_layer": 2})],   # small overrides: fast
                             optimizers=[LION])
    def test_bench_contract(check):
        check()

Keyword arguments are ``models``, ``optimizers``, ``schedules``, ``datasets`` and
``tokenizers``; each takes a component, ``(component, overrides)`` or ``(label, component,
overrides)``. Optimizer and schedule overrides may set ``lr``; model overrides ``vocab_size``.
``check_model``, ``check_optimizer``, ``check_schedule``, ``check_dataset`` and
``check_tokenizer`` run all checks of one component at once (the first failure raises).

What is checked (the functions live in ``bench.testing.<kind>s`` and have docstrings):

* models: shapes, causality in eval AND train mode (dropout masks held equal), context length,
  parameter counts, FLOPs, gradients reach every parameter, it fits one batch, determinism;
* optimizers: covers every parameter, two steps move them, determinism, state round trip
  (k steps + save/load + k steps == 2k steps, bitwise on CPU), obeys ``param_groups[i]["lr"]``,
  skips parameters without a gradient, rejects a negative lr, and for an optimizer declaring the
  optional train/eval switch (``train()`` and ``eval()``, see :mod:`bench.hookspecs`): both or neither,
  each idempotent, ``train()`` after ``eval()`` gives the training weights back, and the round trip
  is driven and checkpointed in eval mode as bench's trainer does it;
* schedules: values in [0, lr], proportional to lr, exact resume, tiny runs, rejects lr 0;
* datasets: tag matches content, splits, token ids in range, determinism (missing data skips);
* tokenizers: attributes, encode/decode round trip, ``encode_batch`` agrees with ``encode``.

This module is also a pytest plugin (entry point ``pytest11``, name ``bench.testing``; load it
explicitly with ``pytest -p bench.testing`` when plugin autoloading is off). It turns a kit
failure into its message without the traceback, and gives a ``bench_registry`` fixture holding
every installed plugin's components, so a package can test its components as installed.
Importing it does not import torch; the checks do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generator

import pytest

from bench.testing.kit import (
    ContractViolation,
    KitCheck,
    all_checks,
    check_component,
    iter_checks,
    parametrize_with_checks,
)

if TYPE_CHECKING:
    from bench.components import Component
    from bench.registry import Registry

__all__ = [
    "ContractViolation", "KitCheck", "all_checks", "check_component", "iter_checks", "parametrize_with_checks",
    "check_model", "check_optimizer", "check_schedule", "check_dataset", "check_tokenizer", "iter_model_checks",
]


def check_model(component: Component, **overrides: Any) -> None:
    check_component("model", (component, overrides))


def check_optimizer(component: Component, **overrides: Any) -> None:
    check_component("optimizer", (component, overrides))


def check_schedule(component: Component, **overrides: Any) -> None:
    check_component("schedule", (component, overrides))


def check_dataset(component: Component, **overrides: Any) -> None:
    check_component("dataset", (component, overrides))


def check_tokenizer(component: Component, **overrides: Any) -> None:
    check_component("tokenizer", (component, overrides))


def iter_model_checks(component: Component, **overrides: Any) -> dict[str, KitCheck]:
    """``{check name: check}`` for one model, to run single checks by name."""
    return {check.name: check for check in iter_checks("model", (component, overrides))}


# -- pytest plugin ------------------------------------------------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report = yield
    if call.excinfo is not None and call.excinfo.errisinstance(ContractViolation) and report.failed:
        report.longrepr = str(call.excinfo.value)  # the message says it all; the kit's traceback would not
    return report


@pytest.fixture(scope="session")
def bench_registry() -> Registry:
    """Every component of every installed ``bench.plugins`` entry point, as ``bench run`` sees them."""
    from bench.registry import build_registry, plugin_manager

    return build_registry(plugin_manager())
