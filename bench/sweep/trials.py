"""A sweep group's trials in Optuna's storage: what was proposed, in which order, with what outcome.

The storage is the sweep's memory across restarts. A rerun replays the strategy from the start:
the first proposals come back from the storage (same parameters, same trial numbers, nothing
asked twice) and only past the last stored trial does a sampler propose anything new. Samplers
are built per proposal with a seed derived from (sweep seed, trial number), so a new proposal
does not depend on whether the process was restarted before it.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, cast

import optuna
import sqlalchemy.exc
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, GridSampler, QMCSampler, RandomSampler, TPESampler
from optuna.study import StudyDirection
from optuna.trial import TrialState

from bench.errors import BenchError
from bench.sweep.space import Param

STORAGE_FILE = "sweep.db"
WARM = "warm_start"  # user attribute of a trial added from an existing cell

optuna.logging.set_verbosity(optuna.logging.WARNING)


def storage_url(folder: Path) -> str:
    return f"sqlite:///{(folder / STORAGE_FILE).resolve()}"


class DamagedStorage(BenchError):
    """sweep.db exists but SQLite cannot read it (truncated, overwritten, not a database)."""


def open_storage(folder: Path) -> optuna.storages.RDBStorage:
    folder.mkdir(parents=True, exist_ok=True)
    return connect_storage(folder)


def connect_storage(folder: Path) -> optuna.storages.RDBStorage:
    """The sweep's Optuna storage; a damaged ``sweep.db`` is :class:`DamagedStorage` with one line
    naming the file and what to do (instead of SQLAlchemy's 80-line traceback)."""
    try:
        storage = optuna.storages.RDBStorage(storage_url(folder))
        optuna.study.get_all_study_names(storage)  # reads the tables: damage shows here, not mid-sweep
    except sqlalchemy.exc.SQLAlchemyError as exc:
        raise DamagedStorage(damaged_storage_line(folder / STORAGE_FILE, exc)) from None
    return storage


def damaged_storage_line(path: Path, exc: BaseException) -> str:
    reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
    return (f"{path} is damaged ({reason}); move it aside (mv {path} {path}.corrupt) and run the sweep again: "
            "its search starts over, and every proposed trial whose cell already finished is reused, not retrained")


def derived_seed(seed: int, number: int) -> int:
    return (seed * 1_000_003 + number) % 2**32


def make_sampler(kind: str, seed: int, number: int, space: dict[str, Param], options: Mapping[str, Any]) -> BaseSampler:
    """The sampler that proposes trial ``number`` of a group."""
    if kind == "random":
        return RandomSampler(seed=derived_seed(seed, number))
    if kind == "tpe":
        return TPESampler(seed=derived_seed(seed, number), n_startup_trials=options["startup_trials"])
    if kind == "quasirandom":
        # The sequence position comes from the storage, so one fixed scramble seed keeps it resumable.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return QMCSampler(qmc_type=options["qmc"], scramble=True, seed=seed,
                              independent_sampler=RandomSampler(seed=derived_seed(seed, number)),
                              warn_independent_sampling=False, warn_asynchronous_seeding=False)
    if kind == "grid":
        return _AskTellGrid({name: p.grid() for name, p in space.items()}, seed=seed)
    raise ValueError(f"no sampler for {kind!r}")


class _AskTellGrid(GridSampler):
    """GridSampler for ask-and-tell: its ``after_trial`` calls ``study.stop()``, which Optuna only
    allows inside ``study.optimize``; the strategy stops by itself after the grid's size."""

    def after_trial(self, study, trial, state, values) -> None:  # noqa: ANN001 - Optuna's signature
        return None


@dataclass
class Outcome:
    """What one trial cell ended as, read from its summary."""

    cell_id: str
    status: str
    metric: float | None = None  # the sweep's metric (final cells), or the validation loss at a halt
    step: int | None = None


class GroupTrials:
    """The trials of one group, in proposal order."""

    def __init__(self, storage: optuna.storages.BaseStorage, name: str, direction: str,
                 distributions: dict[str, BaseDistribution]):
        self.storage = storage
        self.study = optuna.create_study(storage=storage, study_name=name, load_if_exists=True,
                                         direction=StudyDirection.MAXIMIZE if direction == "maximize"
                                         else StudyDirection.MINIMIZE)
        self.study_id = storage.get_study_id_from_name(name)
        self.distributions = distributions
        self.cursor = 0
        self.first_live = 0  # trials numbered below this had ended when the current decisions were made

    def warm_start(self, results: list[tuple[dict[str, Any], float, dict[str, Any]]]) -> int:
        """Add finished results (params, metric, facts) as completed trials, once, before any proposal."""
        if self.study.user_attrs.get("warm_started") is not None or self.study.get_trials(deepcopy=False):
            return 0
        added = 0
        for params, value, attrs in results:
            if not all(k in params for k in self.distributions):
                continue
            try:
                trial = optuna.trial.create_trial(params={k: params[k] for k in self.distributions},
                                                  distributions=self.distributions, value=value,
                                                  user_attrs={**attrs, WARM: True})
            except ValueError:  # outside the searched range: it says nothing about this space
                continue
            self.study.add_trial(trial)
            added += 1
        self.study.set_user_attr("warm_started", added)
        return added

    def _trial_id(self, number: int) -> int:
        return self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)

    def tag(self, number: int, **attrs: Any) -> None:
        """Attach facts (the trial's cell id, its rung) that reports read back."""
        trial_id = self._trial_id(number)
        if self.storage.get_trial(trial_id).state.is_finished():
            return
        for key, value in attrs.items():
            self.storage.set_trial_user_attr(trial_id, key, value)

    def propose(self, sampler: BaseSampler | None = None, fixed: dict[str, Any] | None = None,
                make: Any = None) -> tuple[int, dict[str, Any]]:
        """The next trial's number and parameters: replayed from storage, else newly asked.

        ``make(number)`` builds the sampler for a new trial; ``fixed`` proposes given values instead.
        """
        everything = self.study.get_trials(deepcopy=False)
        # Warm-start trials (results of cells that already existed) inform the sampler; they are never
        # proposed, so a replay walks only the strategy's own trials.
        stored = [t for t in everything if WARM not in t.user_attrs]
        if self.cursor < len(stored):
            replayed = stored[self.cursor]
            self.cursor += 1
            return replayed.number, dict(replayed.params)
        if fixed is not None:
            self.study.enqueue_trial(fixed, skip_if_exists=False)
        if make is not None:
            self.study.sampler = make(len(everything))
        elif sampler is not None:
            self.study.sampler = sampler
        trial = self.study.ask(self.distributions)
        self.cursor += 1
        return trial.number, dict(trial.params)

    def report(self, number: int, points: list[tuple[int, float]]) -> None:
        """Every evaluation of a running trial as an intermediate value (step -> val loss), so pruners
        and ``optuna-dashboard`` see its curve; a finished trial keeps what it has."""
        trial_id = self._trial_id(number)
        frozen = self.storage.get_trial(trial_id)
        if frozen.state.is_finished():
            return
        for step, value in points:
            if step not in frozen.intermediate_values and math.isfinite(value):
                self.storage.set_trial_intermediate_value(trial_id, step, value)

    def should_prune(self, pruner: optuna.pruners.BasePruner, number: int, step: int) -> bool:
        """The pruner's verdict on trial ``number`` at ``step``, as it would have been then.

        A replay after a kill finds more in the storage than the first run had at this point (later
        evaluations of this trial, trials proposed after it). The pruner is shown this trial's values up
        to ``step`` and only trials numbered below the earliest still running, which is exactly what the
        uninterrupted run showed it: the decision, and so the sweep, replays exactly."""
        trials = self.study.get_trials(deepcopy=True)
        frozen = trials[number]
        frozen.intermediate_values = {k: v for k, v in frozen.intermediate_values.items() if k <= step}
        if not frozen.intermediate_values:
            return False
        view = cast(optuna.Study, _StudyAsOf(self.study, trials, self.first_live))  # a Study in all but get_trials
        return bool(pruner.prune(view, frozen))

    def finish(self, number: int, outcome: Outcome, *, pruned: bool = False) -> None:
        """Record a trial's end once; a replayed trial that already ended keeps its record."""
        frozen = self.study.get_trials(deepcopy=False)[number]
        if frozen.state.is_finished():
            return
        self.tag(number, cell_id=outcome.cell_id, status=outcome.status)
        if pruned or outcome.status == "pruned":
            if outcome.metric is not None and math.isfinite(outcome.metric) and outcome.step:
                self.storage.set_trial_intermediate_value(self._trial_id(number), outcome.step, outcome.metric)
            self.study.tell(number, state=TrialState.PRUNED)
        elif outcome.status == "ok" and outcome.metric is not None and math.isfinite(outcome.metric):
            self.study.tell(number, outcome.metric)
        elif outcome.status == "diverged":
            # The worst possible value, not a failure: TPE must learn that this region diverges
            # (a failed trial is invisible to it and it would propose the same region again).
            worst = math.inf if self.study.direction == StudyDirection.MINIMIZE else -math.inf
            self.study.tell(number, worst)
        else:
            self.study.tell(number, state=TrialState.FAIL)


class _StudyAsOf:
    """The study as a pruner saw it when a decision was first made (see GroupTrials.should_prune):
    the same object for everything else, with ``get_trials`` limited to trials that had ended."""

    def __init__(self, study: optuna.Study, trials: list, before: int):
        self._study, self._trials, self._before = study, trials, before

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def get_trials(self, deepcopy: bool = True, states=None) -> list:  # noqa: ANN001 - Optuna's signature
        return [t for t in self._trials if t.number < self._before and (states is None or t.state in states)]
