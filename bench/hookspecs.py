"""The complete plugin contract of bench.

A plugin is any module or object with functions named like the specs below and marked
with ``bench.hookimpl``. Plugins are discovered through the ``bench.plugins`` entry-point
group, the same group the built-in plugins in this distribution use::

    [project.entry-points."bench.plugins"]
    my_models = "my_package.bench_plugin"

Registration hooks return a list of :class:`bench.components.Component`. Names are global:
two distributions registering the same model (or optimizer, ...) name is an error.

Factory signatures, by kind (``**hparams`` are exactly the component's ``defaults`` keys,
overridden by the matrix):

* model:     ``factory(vocab_size: int, **hparams) -> bench.lm.LanguageModel``
* optimizer: ``factory(params, *, lr: float, device_type: str, **hparams) -> torch.optim.Optimizer``
* schedule:  ``factory(*, lr: float, total_steps: int, **hparams) -> Callable[[int], float]``
  (maps a 0-based optimizer step to the learning rate for that step)
* dataset:   ``factory(**hparams) -> bench.data.corpus.Corpus``
* tokenizer: ``factory() -> bench.data.tokenizer.Tokenizer``
* executor:  ``factory(**options) -> executor`` (runs cells; see :mod:`bench.executors`)

Factories raise ``ValueError`` for impossible hyperparameters; bench reports the message
as a configuration error before any training starts.

Lifecycle hooks receive plain data (the cell's name/id/config and dicts of numbers) so a
logger plugin (console, CSV, a tracking service) depends on nothing else in bench.
"""

from __future__ import annotations

from typing import Any

import pluggy

PROJECT = "bench"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# -- registration -------------------------------------------------------------------------


@hookspec
def bench_models() -> list:
    """Return the language models this plugin provides."""


@hookspec
def bench_optimizers() -> list:
    """Return the optimizers this plugin provides."""


@hookspec
def bench_schedules() -> list:
    """Return the learning-rate schedules this plugin provides."""


@hookspec
def bench_datasets() -> list:
    """Return the datasets this plugin provides (tag each ``"text"`` or ``"tokens"``)."""


@hookspec
def bench_tokenizers() -> list:
    """Return the tokenizers this plugin provides."""


@hookspec
def bench_executors() -> list:
    """Return the executors this plugin provides: components whose ``factory(**options)`` builds an
    object with ``execute(cells, spec, session) -> list[bench.runner.CellOutcome]`` (see
    :mod:`bench.executors`); ``defaults`` are the options a matrix's ``[executor]`` table may set."""


# -- lifecycle ----------------------------------------------------------------------------


@hookspec
def bench_run_start(cell: dict[str, Any], total_steps: int) -> None:
    """A cell is about to train. ``cell`` has ``id``, ``name`` and ``config``."""


@hookspec
def bench_log_step(cell: dict[str, Any], step: int, metrics: dict[str, float]) -> None:
    """Called every ``log_every`` optimizer steps (and at each epoch end) with ``train_loss``, the
    mean since the last call, ``lr`` and ``elapsed_s``, the training seconds so far. Never called
    more often: reading the loss syncs the device."""


@hookspec
def bench_evaluation(cell: dict[str, Any], epoch: int, step: int, metrics: dict[str, float]) -> None:
    """Called after each validation pass (every epoch, and every ``eval_every`` steps if set)."""


@hookspec
def bench_run_end(cell: dict[str, Any], summary: dict[str, Any]) -> None:
    """A cell finished, successfully or not; ``summary`` is what the result store keeps."""
