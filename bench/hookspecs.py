"""The complete plugin contract of bench, in one place.

Discovery
---------
A plugin is a module (or object) with functions named like the specs below, marked with
``bench.hookimpl``. Distributions expose plugins through the ``bench.plugins`` entry-point group,
the same group bench's own built-in plugins use::

    [project.entry-points."bench.plugins"]
    my_models = "my_package.bench_plugin"

and depend on bench's distribution, ``bench-lm`` (the import package and command stay ``bench``).
Everything a plugin imports is re-exported from :mod:`bench`: ``Component``, ``hookimpl``,
``LanguageModel``, ``Corpus`` and ``Tokenizer``.

A plugin that fails to import, or whose registration hook raises or returns something other than
``Component`` objects, is left out with one warning naming its distribution and the error; the
others load. ``--disable-plugin NAME`` (the entry-point name, as ``bench list --verbose`` shows it, or
a distribution name) or ``BENCH_DISABLE_PLUGINS=name,...`` skips plugins;
``BENCH_DISABLE_PLUGIN_AUTOLOAD=1`` loads only bench's built-ins plus those named by ``--plugin``
(an entry-point name or an importable module).

Components and their keys
-------------------------
Registration hooks return a list of :class:`bench.Component`: a name, a factory, ``defaults`` (every
hyperparameter the factory takes, by keyword) and a description. Names are global per kind: when two
plugins register the same name, cells that use it fail with a message naming both distributions;
every other cell runs.

A component whose results are computed by another distribution's code as well as the plugin's own
(an optimizer wrapping a library's class) names it in ``depends_on`` (distribution names as pip
spells them: ``Component("lion", lion, {...}, depends_on=("pytorch-optimizer",))``). bench looks up
each one's installed version with ``importlib.metadata`` when it loads the plugins and records it in
the cell's provenance next to the plugin's own version (``None`` when not installed); a finished cell
whose recorded version of such a library differs from the installed one is stale and trained again,
as one whose plugin version changed is, and ``bench report``'s versions table shows it. A result
stored before its component declared a library (or before bench recorded libraries) records none and
is kept: nothing says which version computed it. bench's own distribution and torch need no entry.

``Component.params(config)`` is the part of a resolved cell config a component's factory takes, and
``Component.build(config, *args, **named)`` calls the factory with it (bench builds every component
this way).

Each cell has one value per key. A matrix key reaches a component exactly when it is in that
component's ``defaults``. The value is, in order: the matrix's; else the declaring component's
default; else bench's own default (``bench.schema.TRAINER_KEYS``). When two components of one cell
declare the same key they share that one value, and if the matrix does not set it their defaults must
agree (otherwise the matrix is refused, naming both: set the key in the matrix). A component may
declare one of bench's own keys to change its default for the cells that use it: an optimizer listing
``"lr": 1e-4`` trains at 1e-4 unless the matrix sets ``lr``.

Factory signatures, by kind (``**hparams`` are the component's ``defaults`` keys, resolved as above;
the named arguments are passed by bench, and a declared ``lr`` arrives once, as ``lr``):

* model:     ``factory(vocab_size: int, **hparams) -> bench.LanguageModel``
  (``forward(idx: LongTensor[B, T]) -> logits[B, T, vocab_size]``, causal; sets ``vocab_size`` and
  ``context_length`` (``None`` when unbounded); implements ``flops_per_token(seq_len)``)
* optimizer: ``factory(params, *, lr: float, device_type: str, **hparams) -> torch.optim.Optimizer``
  (must read ``param_groups[i]["lr"]`` at every step: schedules set it; ``params`` is an iterable of
  parameters or of parameter-group dicts); tag it ``"schedule-free"`` if it replaces the schedule
  (Schedule-Free AdamW): under a schedule not tagged ``"flat"`` bench then warns, one line at
  ``--dry-run`` and when the cell starts, that the rate decays on top of it (not an error)
* schedule:  ``factory(*, lr: float, total_steps: int, **hparams) -> Callable[[int], float]``
  (maps a 0-based optimizer step to the learning rate for that step; a stateful schedule exposes
  ``state_dict()`` and ``load_state_dict(state)`` and is checkpointed with the cell); tag it
  ``"flat"`` if the rate stays constant after its warmup (the built-in ``constant``)
* dataset:   ``factory(**hparams) -> bench.Corpus`` (splits ``train``/``valid``/``test`` of text (a
  ``str``, or a ``bench.TextFile`` that stays on disk and is streamed) or of token ids;
  tag the component ``"text"`` or ``"tokens"``: a ``"tokens"`` dataset sets
  ``Corpus.vocab_size`` and gets no tokenizer, a ``"text"`` one is encoded by the cell's tokenizer;
  a token split is a 1-D integer array or a ``bench.TokenShards`` of several, e.g. ``np.memmap``
  files, which bench reads in place and never copies whole)
* tokenizer: ``factory(**hparams) -> bench.Tokenizer`` (``name``, ``vocab_size``, ``encode``,
  ``decode``; ``eot_token``: the document-separator id or ``None``; optional
  ``encode_batch(texts) -> list[list[int]]``, used for long texts when present, must equal ``encode``
  on each text)
* executor:  ``factory(**options) -> executor`` with ``execute(cells, spec, session)`` (runs cells; see
  :mod:`bench.executors`)
* tracker:   ``factory(*, cell: dict, folder: pathlib.Path, **options) -> tracker``: an object with any
  of the lifecycle methods below (same names and arguments), built for each cell whose ``trackers``
  key names it, in the process that trains the cell. ``folder`` is the matrix's results folder
  (``outputs/<matrix>``), ``cell`` as the lifecycle hooks receive it. An optional ``close(status)``
  is called once when the cell ends, whatever happened (``status`` is the summary's, or
  ``"failed"`` when the cell raised). A tracker whose factory or method raises gets one warning and
  is dropped for that cell; the cell's outcome never changes (see :mod:`bench.trackers`).

Optimizer modes (optional part of the optimizer contract): an optimizer whose parameters hold
different values while training and while being evaluated (Schedule-Free: training at ``y``,
evaluating at the average ``x``) defines both methods ``train() -> None`` and ``eval() -> None``
(one without the other declares nothing). bench then calls ``train()`` before the first step of every
run and resumed run (so the optimizer may start, and a checkpoint may load, in eval mode), and
``eval()`` before, ``train()`` after, every validation pass (with the best weights copied in eval
mode, so the test split is scored on them) and every checkpoint save (so a checkpoint holds the
evaluation weights and the optimizer's eval-mode state). Each call must be idempotent, ``step()`` is
only called in train mode, and ``state_dict`` must record the mode (Schedule-Free keeps it in its
param groups). An eval/train round trip should give the training weights back bitwise (the kit
accepts a float-rounding difference); one that does not makes a run depend, in the last bits, on when
it was evaluated and checkpointed, and a halted-and-continued run leave the uninterrupted path.
``bench.optimizer_modes`` has the helpers; ``bench.testing`` checks the switch.

Factory errors: a factory raising ``ValueError`` says the matrix asks for something impossible; bench
refuses the matrix (exit 2) with the message, before anything trains. Every factory is tried at
resolve time (the model's shapes only, on the meta device); any other exception, or an object of the wrong type,
is the plugin's fault and becomes one line naming the component, its distribution and the cell:
``bench run --dry-run`` prints every such line and exits 2, ``bench run`` records each such cell as
``error`` and trains the others. ``bench.testing`` checks a component against this contract.

Lifecycle hooks and the hook-error policy
-----------------------------------------
Lifecycle hooks receive plain data, so a logger plugin (console, CSV, a tracking service) depends on
nothing else in bench. ``cell`` is ``{"id", "name", "config", "provenance"}``: the cell id, its
readable name, the fully resolved config and which distribution/version provided each component
(see :mod:`bench.provenance`). They are observers: bench calls each implementation separately
(:class:`bench.hooks.GuardedHooks`); one that raises gets a single warning naming its distribution
(later failures of the same plugin are silent), the other implementations still run, and the cell
goes on with its outcome and result unchanged. Lifecycle hooks cannot be hook wrappers.

The model protocol beyond ``forward``
-------------------------------------
Optional methods a model may add (the full text is :class:`bench.lm.LanguageModel`'s docstring):

* ``hidden(idx) -> (B, T, C)`` and ``head(h) -> (..., vocab_size)`` (a method or a submodule,
  applied position by position) with ``head(hidden(idx)) == forward(idx)``: with both, bench runs
  the head only where it needs logits (the loss in chunks of ``loss_chunk`` positions, HellaSwag at
  continuation positions). :func:`bench.lm.split` finds them.
* ``hidden_after(prefix (1, P), suffixes (N, S)) -> (N, S, C)``, needs the split: the hidden
  states of each suffix row read after the one prefix, equal to float rounding to
  ``hidden(cat([prefix.expand(N, -1), suffixes], 1))[:, P:]``; HellaSwag reads a context once for
  its four endings this way (:func:`bench.lm.prefix_reader`).
* ``embedding_parameters()``: the token tables (counted apart in ``parameter_counts()``; a tied
  output head belongs here).

Parameter roles (optimizers)
----------------------------
Before the optimizer factory runs, bench tags every model parameter with its role in the attribute
``bench_role`` (:mod:`bench.param_roles`; read it with ``bench.param_roles.role_of(param)``). Roles,
first match wins: ``embedding`` (``nn.Embedding`` weights and ``model.embedding_parameters()``),
``norm`` (parameters of normalisation layers), ``bias`` (names containing ``bias``), ``head`` (an
``nn.Linear`` with ``out_features == vocab_size``), ``matrix`` (any other parameter with two or more
dimensions), ``vector`` (everything else). Optimizers such as Muon use them to pick the hidden
matrices; ``decay_exclude`` names roles left out of weight decay.

Rules bench and its conformance kit enforce
-------------------------------------------
bench refuses a matrix (exit 2, before anything trains) whose ``lr`` is <= 0, whose ``seq_len``
exceeds a model's ``context_length``, or whose factory raises ``ValueError``. ``bench.testing``
(``parametrize_with_checks``) checks each component against these rules; built-ins pass them all:

* model: returns a ``LanguageModel`` with the factory's ``vocab_size``; logits ``(B, T, V)``, finite;
  causal (changing tokens at positions >= t leaves logits at positions < t unchanged to 1e-5 +
  1e-4 x max|logit|) in eval and train mode, at initialisation and after 8 Adam steps, on inputs of
  length 8 and of the model's context (at most 64 tokens); an input longer than ``context_length``
  raises ``ValueError``; ``parameter_counts()`` totals the unique parameters, with
  ``total >= non_embedding > 0``; ``flops_per_token`` is a positive int, not shrinking with length,
  growing with ``n_layer``; every parameter gets a finite gradient; 30 Adam steps fit one batch;
  two builds under one ``torch.manual_seed`` are equal; the optional methods above agree with
  ``forward``/``hidden``.
* optimizer: returns a ``torch.optim.Optimizer`` whose groups carry ``lr``; a step moves every
  parameter with a gradient and leaves those with ``grad = None``; deterministic; k steps +
  ``state_dict`` round trip + k steps == 2k steps bitwise on CPU; follows ``param_groups[i]["lr"]``;
  ``lr < 0`` raises ``ValueError`` in the factory.
* schedule: values in ``[0, lr]``, proportional to ``lr``, exact after ``load_state_dict``, valid for
  runs of 1-2 steps; ``lr <= 0`` raises ``ValueError``.
* dataset: exactly one of the tags ``text``/``tokens``, matching the content; the three splits, train
  and valid non-empty; token ids in ``[0, vocab_size)``; the same corpus from two builds and from a
  fresh process with another ``PYTHONHASHSEED`` (``--jobs`` workers build it there, so never seed
  from ``hash(str)``); validation and test not copied from train (sampled windows looked up
  verbatim); ``entropy_rate`` ``None`` or a float >= 0 nats/token. A known ``entropy_rate`` is a floor:
  a result below it is reported as impossible (:mod:`bench.floor`).
* tokenizer: ``name``/``vocab_size``/``eot_token`` attributes; ``decode(encode(text)) == text``;
  ``encode_batch`` equal to ``encode`` on each text.

Stability
---------
This module, :mod:`bench` and :mod:`bench.testing` are the public API: the names in their
``__all__`` (a test keeps the lists, so a removal is deliberate). ``PLUGIN_API_VERSION`` is
``MAJOR.MINOR``: MINOR grows when the contract gains something optional, MAJOR when something a
plugin may rely on changes or goes. A change is deprecated first (a ``DeprecationWarning`` for at
least one release, both ways working) and listed in the changelog (``CHANGELOG.md``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from bench.components import Component

__all__ = [
    "PLUGIN_API_VERSION", "PROJECT", "hookimpl", "hookspec",
    "bench_models", "bench_optimizers", "bench_schedules", "bench_datasets", "bench_tokenizers", "bench_executors",
    "bench_trackers", "bench_run_start", "bench_log_step", "bench_evaluation", "bench_run_end",
]

PLUGIN_API_VERSION = "1.3"  # see Stability above and CHANGELOG.md
PROJECT = "bench"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# -- registration -------------------------------------------------------------------------


@hookspec
def bench_models() -> list[Component]:
    """Return the language models this plugin provides.

    :return: ``Component`` objects whose factory is ``factory(vocab_size, **hparams)`` and returns a
        :class:`bench.LanguageModel`.
    """
    raise NotImplementedError  # a specification: only implementations are called


@hookspec
def bench_optimizers() -> list[Component]:
    """Return the optimizers this plugin provides.

    :return: ``Component`` objects whose factory is ``factory(params, *, lr, device_type, **hparams)``
        and returns a ``torch.optim.Optimizer``; ``defaults`` may hold ``lr``, this optimizer's own
        default learning rate.
    """
    raise NotImplementedError  # a specification: only implementations are called


@hookspec
def bench_schedules() -> list[Component]:
    """Return the learning-rate schedules this plugin provides.

    :return: ``Component`` objects whose factory is ``factory(*, lr, total_steps, **hparams)`` and
        returns ``step -> lr`` (optionally with ``state_dict``/``load_state_dict``).
    """
    raise NotImplementedError  # a specification: only implementations are called


@hookspec
def bench_datasets() -> list[Component]:
    """Return the datasets this plugin provides.

    :return: ``Component`` objects tagged ``"text"`` or ``"tokens"`` whose factory is
        ``factory(**hparams)`` and returns a :class:`bench.Corpus`.
    """
    raise NotImplementedError  # a specification: only implementations are called


@hookspec
def bench_tokenizers() -> list[Component]:
    """Return the tokenizers this plugin provides.

    :return: ``Component`` objects whose factory is ``factory(**hparams)`` and returns a
        :class:`bench.Tokenizer`.
    """
    raise NotImplementedError  # a specification: only implementations are called


@hookspec
def bench_executors() -> list[Component]:
    """Return the executors this plugin provides.

    :return: ``Component`` objects whose ``factory(**options)`` builds an object with
        ``execute(cells, spec, session) -> list[bench.runner.CellOutcome]`` (see :mod:`bench.executors`);
        ``defaults`` are the options a matrix's ``[executor]`` table may set.
    """
    raise NotImplementedError  # a specification: only implementations are called


@hookspec
def bench_trackers() -> list[Component]:
    """Return the experiment trackers this plugin provides (TensorBoard, W&B, MLflow, ...).

    :return: ``Component`` objects whose factory is ``factory(*, cell, folder, **options)`` and returns
        an object with any of the lifecycle hook methods (and optionally ``close(status)``).
    """
    raise NotImplementedError  # a specification: only implementations are called


# -- lifecycle ----------------------------------------------------------------------------


@hookspec
def bench_run_start(cell: dict[str, Any], total_steps: int) -> None:
    """A cell is about to train (or to resume from its checkpoint).

    :param cell: ``{"id", "name", "config", "provenance"}`` of the cell.
    :param total_steps: optimizer steps the cell trains for in all (resumed steps included).
    """


@hookspec
def bench_log_step(cell: dict[str, Any], step: int, metrics: dict[str, float]) -> None:
    """Training progress, every ``log_every`` optimizer steps and at each epoch end; never more often,
    since reading the loss syncs the device.

    :param cell: ``{"id", "name", "config", "provenance"}`` of the cell.
    :param step: optimizer steps done so far (1-based).
    :param metrics: ``train_loss`` (mean over the steps since the previous call, nats/token), ``lr``
        (the learning rate of the last step) and ``elapsed_s`` (training seconds so far, evaluation and
        checkpointing excluded).
    """


@hookspec
def bench_evaluation(cell: dict[str, Any], epoch: int, step: int, metrics: dict[str, float]) -> None:
    """A validation pass finished (every epoch, and every ``eval_every`` steps if set).

    :param cell: ``{"id", "name", "config", "provenance"}`` of the cell.
    :param epoch: the epoch in progress (1-based).
    :param step: optimizer steps done so far.
    :param metrics: ``loss`` (mean nats/token over the validation split's ``seq_len`` windows, which
        advance by ``eval_stride``: non-overlapping by default; with ``val_windows`` a fixed subset of
        them, the same every pass), ``ppl`` (``exp(loss)``), ``tokens``
        (targets scored) and, for word-level datasets such as wikitext2, ``word_ppl`` (``exp`` of the
        total loss over the split's word count).
    """


@hookspec
def bench_run_end(cell: dict[str, Any], summary: dict[str, Any]) -> None:
    """A cell finished, successfully or not. Called after the summary is stored: what this hook does
    cannot change the cell's status or result. For a cell whose worker process died (SIGKILL, a lost
    Ray node) the driver process calls it, with the ``interrupted`` summary it recorded.

    :param cell: ``{"id", "name", "config", "provenance"}`` of the cell.
    :param summary: what the result store keeps in ``summary.json``: ``status`` (``ok``, ``diverged``,
        ``oom``, ``error``, ``interrupted``, ...), ``step``, and for ``ok`` cells ``best_val_ppl``,
        ``test_ppl``, timing and memory figures; failed cells carry ``reason``.
    """
