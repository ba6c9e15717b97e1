"""Run a sweep: the strategies propose, the runner trains, the result store remembers.

The sweep runs in rounds: each group's strategy hands over its next batch of requests (a
Hyperband rung, ``batch`` random/TPE proposals), and the cells of every group's batch train in
one :func:`bench.runner.run_cells` call, so an executor with several workers trains them at
once. Groups get one batch each per round, so a sweep stopped at any moment has given every
group (nearly) the same share. Trial cells are trained exactly like the cells of a plain matrix:
same resume, failure isolation and summaries. Which cells a batch holds never depends on the
executor, so neither do the proposals.
"""

from __future__ import annotations

import dataclasses
import json
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from bench import floor
from bench.budget import planned_steps
from bench.cells import OPERATIONAL_KEYS, Cell, resolve_config
from bench.checkpoint import CHECKPOINT_DIR, CheckpointStore
from bench.errors import ConfigError
from bench.eta import PlannedWork, steps_run
from bench.matrix import Matrix
from bench.registry import Registry
from bench.runner import run_cells
from bench.store import CellRecord, ResultStore
from bench.sweep.groups import Group, finite, fixed_keys, flops_per_token, probe_values, trial_cell
from bench.sweep.ledger import CHARGE, NOT_STARTED, REUSED, Ledger, trial_flops
from bench.sweep.spec import SweepSpec
from bench.sweep.strategies import (
    Batch,
    GroupContext,
    Prune,
    Request,
    Run,
    Strategy,
    batch_shapes_proposals,
    distributions,
    strategy_for,
)
from bench.sweep.trials import WARM, GroupTrials, Outcome, open_storage
from bench.sweep.work import SweepWork, open_ended_bound, plan_sweep, progress_line

FINAL = ("ok", "diverged", "pruned")
LOST_RETRIES = 1  # times a round's cells whose worker died are run again before the sweep gives up
# (budget, Budget.total() key, how its amount left reads)
BUDGET_LEFT = (("max_time", "time_s", "{:.0f} s of training"), ("max_flops", "flops", "{:.3g} FLOPs"),
               ("max_cost", "cost", "${:.2f}"))
EXTENSIBLE = ("trials", "max_flops", "max_time", "max_cost", "cost_per_hour", "final_seeds", "final_overrides",
              "max_total_flops", "reuse_trial_seeds")


@dataclass
class Budget:
    """What a group's trials have spent; a cell trained over several rungs counts once, at its latest."""

    spec: SweepSpec
    spent: dict[str, dict[str, float]] = field(default_factory=dict)

    def update(self, cell_id: str, used: dict[str, float]) -> None:
        self.spent[cell_id] = used

    def total(self) -> dict[str, float]:
        keys = ("flops", "time_s", "cost")
        return {k: sum(s[k] for s in self.spent.values()) for k in keys}

    def exhausted(self) -> bool:
        used, spec = self.total(), self.spec
        return any(limit and used[k] >= limit for k, limit in
                   (("flops", spec.max_flops), ("time_s", spec.max_time), ("cost", spec.max_cost)))


def spent_by(summary: dict[str, Any], record: CellRecord, flops_per_token: float, cost_per_hour: float) -> dict:
    """Training steps, tokens, FLOPs, seconds and dollars a cell has used so far: a finished cell's
    ``budget_used``; for a paused one, its step and the training time of its last validation row."""
    if summary.get("budget_used"):
        return {k: float(summary["budget_used"].get(k) or 0) for k in ("steps", "tokens", "flops", "time_s", "cost")}
    config, step = summary.get("config") or {}, int(summary.get("step") or 0)
    tokens = step * config.get("batch_size", 0) * config.get("grad_accum", 1) * config.get("seq_len", 0)
    times = [r["train_time_s"] for r in record.read_metrics() if r.get("step") == step and "train_time_s" in r]
    time_s = float(times[-1]) if times else 0.0
    return {"steps": step, "tokens": tokens, "flops": float(tokens * flops_per_token), "time_s": time_s,
            "cost": time_s / 3600 * cost_per_hour}


@dataclass
class SweepRun:
    matrix: Matrix
    spec: SweepSpec
    groups: list[Group]
    registry: Registry
    hooks: Any
    store: ResultStore
    device: torch.device
    stop: Any = None
    executor: Any = None  # bench.executors' choice; None trains in this process
    lock: Any = None
    say: Callable[[str], None] = print
    interrupted: str | None = None
    plugins: Any = None  # the run's bench.registry.PluginSelection, so worker processes load the same plugins
    ledger: Ledger | None = None  # [sweep] max_total_flops: what all trials together may spend
    ledger_stop: str | None = None  # why the ledger ended the search
    work: SweepWork | None = None  # what the sweep plans to train (bench.sweep.work)
    progress: PlannedWork | None = None  # its steps done, and this session's speed

    def run(self) -> bool:
        """Run every group's search, then the final seeds; False when a stop request ended it early.
        An executor that can keep its workers between batches (``kept()``) keeps them for the sweep."""
        with getattr(self.executor, "kept", nullcontext)():
            return self._rounds()

    def studies(self, group: Group) -> list[tuple[str, SweepSpec]]:
        return split_studies(self.spec, group)

    def _rounds(self) -> bool:
        storage = open_storage(self.store.path)
        contexts = {label: self._context(storage, g, spec, index)
                    for g in self.groups for index, (label, spec) in enumerate(self.studies(g))}
        if self.spec.options.get("max_total_flops"):
            trials = [t.user_attrs for ctx, _ in contexts.values() for t in ctx.trials.study.get_trials(deepcopy=False)]
            self.ledger = Ledger.from_store(self.spec.options["max_total_flops"], self.store, trials)
            self.say(self.ledger.line())
        self.work = plan_sweep(self.matrix, self.spec, [(g, label, s) for g in self.groups
                                                        for label, s in self.studies(g)], self.registry)
        self.progress = PlannedWork(self.work.steps, done=sum(steps_run(s) for s in self.store.summaries()))
        strategies: dict[str, Strategy] = {label: strategy_for(ctx) for label, (ctx, _) in contexts.items()}
        batches: dict[str, Batch] = {}
        for label, strategy in strategies.items():
            first = next(strategy, None)
            if first is not None:
                batches[label] = first
        while batches:
            trained = self.progress.session_steps
            outcomes = self._round(batches, contexts)
            if outcomes is None and self.ledger_stop is not None:
                self.say(self.ledger_stop)
                break
            if outcomes is None:
                return False
            for label, results in outcomes.items():
                try:
                    batches[label] = strategies[label].send(results)
                except StopIteration:
                    del batches[label]
            if self.progress.session_steps > trained:
                self._say_progress(contexts)
        if self.ledger is not None and self.ledger_stop is None:
            self.say(self.ledger.line())
        return self._final_seeds(contexts)

    def _say_progress(self, contexts: dict[str, tuple[GroupContext, Budget]]) -> None:
        """Trials settled of planned and the time left (bench.sweep.work's plan), after a round that trained."""
        assert self.work is not None and self.progress is not None
        if self.work.steps is not None and not self.progress.steps_left():
            return
        settled = sum(1 for ctx, _ in contexts.values() for t in ctx.trials.study.get_trials(deepcopy=False)
                      if WARM not in t.user_attrs and t.state.is_finished())
        left = self._budget_left(contexts)
        bound = open_ended_bound(self.spec, left)
        note = f"; a budget may end it sooner ({left} left)" if left else ""
        self.say(progress_line(self.work, self.progress, settled, bound, note))

    def _budget_left(self, contexts: dict[str, tuple[GroupContext, Budget]]) -> str:
        """What the budgets have left, summed over the groups' studies, and the FLOP ledger's."""
        parts = []
        for key, spent, shown in BUDGET_LEFT:
            limits = [(getattr(budget.spec, key), budget.total()[spent]) for _, budget in contexts.values()]
            if any(limit for limit, _ in limits):
                parts.append(f"{key} " + shown.format(sum(max(0.0, limit - used) for limit, used in limits if limit)))
        if self.ledger is not None:
            parts.append(f"max_total_flops {self.ledger.left:.3g} FLOPs")
        return ", ".join(parts)

    def _context(self, storage, group: Group, spec: SweepSpec, index: int) -> tuple[GroupContext, Budget]:
        label = group.label if spec.options["studies"] == 1 else f"{group.label} study {index + 1}"
        trials = GroupTrials(storage, label, spec.direction, distributions(spec))
        sweep_settings: dict[str, Any] = spec.to_dict()
        settings: dict[str, Any] = {"sweep": sweep_settings, "group": group.key, "label": group.label,
                                    "base": dict(group.base)}
        if spec.options["studies"] > 1:
            settings["study"] = index
        # What decides the proposals must not change under a started sweep; budgets and the final
        # reruns may (raising `trials` extends a sweep: the stored trials replay, new ones follow).
        # `batch` counts only where it changes proposals (TPE), so sweeps from before it existed still match.
        volatile = EXTENSIBLE + (() if batch_shapes_proposals(self.spec) else ("batch",))
        fixed = {**settings, "sweep": {k: v for k, v in sweep_settings.items() if k not in volatile}}
        fingerprint = json.dumps(fixed, sort_keys=True, default=str)
        stored = trials.study.user_attrs.get("fingerprint")
        if stored is not None and stored != fingerprint:
            raise ConfigError(f"the [sweep] settings of {self.matrix.name!r} changed since {self.store.path}/sweep.db "
                              f"was written; restore them, or move that folder away to start a new sweep")
        for key, value in settings.items():  # the latest budgets, for reports
            trials.study.set_user_attr(key, value)
        trials.study.set_user_attr("fingerprint", fingerprint)
        if spec.options["warm_start"]:
            added = trials.warm_start(self._warm_results(group, spec))
            if added:
                self.say(f"sweep {label}: warm-started from {added} finished cell(s) of "
                         f"{', '.join(spec.options['warm_start'])}")
        budget = Budget(spec)
        total, every = self._trial_length(group, spec)
        spent = lambda: budget.exhausted() or (self.ledger is not None and self.ledger.left <= 0)  # noqa: E731
        return GroupContext(spec, trials, spent, total, every), budget

    def _trial_length(self, group: Group, spec: SweepSpec) -> tuple[int, int]:
        """Steps a full trial trains and steps between its evaluations; a pruned search needs both."""
        if spec.options["pruner"] == "none":
            return 0, 0
        config = resolve_config({**group.base, **probe_values(spec)[0], **fixed_keys(spec),
                                 "seed": self.matrix.seeds[0]}, self.registry, f"sweep group {group.label}")
        if not (config["max_steps"] or config["max_tokens"] or config["max_flops"]):
            raise ConfigError(f"sweep.pruner needs each trial's length in steps before it trains: set max_steps, "
                              f"max_tokens or max_flops in [defaults] of {self.matrix.name!r}")
        fpt = int(flops_per_token(config, self.registry)) if config["max_flops"] else 0
        _, total = planned_steps(config, 0, fpt)
        every = spec.options["prune_every"] or config["eval_every"] or 0
        if not every:
            raise ConfigError(f"sweep.pruner decides at evaluations: set eval_every (steps) in [defaults] of "
                              f"{self.matrix.name!r} or sweep.prune_every")
        return total, every

    def _warm_results(self, group: Group, spec: SweepSpec) -> list[tuple[dict[str, Any], float, dict[str, Any]]]:
        """Finished cells of the ``warm_start`` matrices that are this group's base cell with other
        values of the searched keys: (params, metric, facts) for the study."""
        fixed = {**group.base, **fixed_keys(spec)}
        ignore = set(spec.space) | {"seed"} | OPERATIONAL_KEYS
        results = []
        for name in spec.options["warm_start"]:
            for summary in ResultStore(self.store.root, name).summaries():
                config = summary.get("config") or {}
                value = summary.get(spec.metric)
                if summary.get("status") != "ok" or not finite(value) or config.get("seed") != self.matrix.seeds[0]:
                    continue
                if all(config.get(k) == v for k, v in fixed.items() if k not in ignore):
                    params = {k: config.get(k) for k in spec.space}
                    results.append((params, float(value or 0.0), {"cell_id": summary.get("id"), "matrix": name,
                                                           "status": "warm start"}))
        return sorted(results, key=lambda r: r[2]["cell_id"] or "")

    def _round(self, batches: dict[str, Batch],
               contexts: dict[str, tuple[GroupContext, Budget]]) -> dict[str, list[Outcome]] | None:
        """Every group's batch: impossible trials and prunes are settled here, the cells left to train go
        to the executor together. The outcomes per group, in request order; None if a stop ended it."""
        groups = {label: g for g in self.groups for label, _ in self.studies(g)}
        resolved = {label: [self._resolve(groups[label], contexts[label][0], r) for r in requests]
                    for label, requests in batches.items()}
        train: dict[str, Cell] = {}  # one entry per cell: two proposals of the same values share it
        labels: dict[str, str] = {}
        for label, requests in batches.items():
            for request, (cell, outcome) in zip(requests, resolved[label]):
                if cell is not None and outcome is None and not self._reached(cell, request):
                    train.setdefault(cell.id, cell)
                    labels.setdefault(cell.id, f"sweep {label} trial {request.number}")
        if self.ledger is not None:
            train = self._charge(train, batches, resolved, contexts)
        if train and not self._train(list(train.values()), labels):
            return None
        if self.ledger is not None:
            if train:
                self.say(self.ledger.line())
            if self.ledger_stop is not None:
                return None
        return {label: [outcome or self._ran(contexts[label], cell, request)
                        for request, (cell, outcome) in zip(requests, resolved[label])]
                for label, requests in batches.items()}

    def _charge(self, train: dict[str, Cell], batches: dict[str, Batch], resolved: dict,
                contexts: dict[str, tuple[GroupContext, Budget]]) -> dict[str, Cell]:
        """The round's cells that fit in the FLOP ledger, charged (in the store) before they start; a
        request answered by a cell already trained, or by another request's cell, is marked reused."""
        assert self.ledger is not None
        wanted: dict[str, float] = {}
        requests: dict[str, list[tuple[str, int]]] = {}
        for label, batch in batches.items():
            for request, (cell, outcome) in zip(batch, resolved[label]):
                if cell is None or outcome is not None:
                    continue
                if cell.id not in train or cell.id in requests:  # trained before, or a twin in this round
                    trials = contexts[label][0].trials
                    attrs = trials.storage.get_trial(trials._trial_id(request.number)).user_attrs
                    if CHARGE not in attrs and REUSED not in attrs:
                        trials.tag(request.number, **{REUSED: True})
                        self.ledger.reused += 1
                    continue
                halt = request.halt_at_step if isinstance(request, Run) else 0
                wanted[cell.id] = trial_flops(cell.config, flops_per_token(cell.config, self.registry), halt)
                requests.setdefault(cell.id, []).append((label, request.number))

        def tag(cell_id: str, flops: float) -> None:
            for label, number in requests[cell_id]:
                contexts[label][0].trials.tag(number, **{CHARGE: flops})

        admitted, self.ledger_stop = self.ledger.admit(list(wanted.items()), tag)
        for cell_id in set(wanted) - set(admitted):  # reported as such, not as running; a resume may start them
            for label, number in requests[cell_id]:
                contexts[label][0].trials.tag(number, status=NOT_STARTED)
        return {cell_id: train[cell_id] for cell_id in admitted}

    def _resolve(self, group: Group, ctx: GroupContext, request: Request) -> tuple[Cell | None, Outcome | None]:
        """The request's cell, and its outcome where it needs no training (impossible, or a prune)."""
        halt = request.halt_at_step if isinstance(request, Run) else 0
        try:
            cell = trial_cell(self.matrix, self.spec, group, request.params, self.registry, halt_at_step=halt)
        except ConfigError as exc:  # a combination of in-range values can still be impossible
            self.say(f"sweep {group.label} trial {request.number}: skipped, invalid: {exc}")
            ctx.trials.tag(request.number, reason=str(exc)[-300:])
            return None, Outcome("", "invalid")
        ctx.trials.tag(request.number, cell_id=cell.id)
        if isinstance(request, Prune):
            return cell, self._prune(cell, request)
        return cell, None

    def _reached(self, cell: Cell, request: Request) -> bool:
        halt = request.halt_at_step if isinstance(request, Run) else 0
        return _reached(self.store.cell(cell.id).read_summary() or {}, halt)

    def _train(self, cells: list[Cell], labels: dict[str, str], evaluation: dict[str, Any] | None = None) -> bool:
        """One run_cells call for a round's cells; False when a stop request ended it, or when a cell
        stayed ``interrupted`` (its worker died twice): a trial is never told an outcome it did not reach.
        ``evaluation`` (the matrix's ``[eval]``) scores the cells that finish, as in a plain run."""
        for _ in range(LOST_RETRIES + 1):
            if self.stop is not None and self.stop.requested:
                self.interrupted = self.stop.cause
                return False
            before = {c.id: self._steps(c) for c in cells}
            result = run_cells(cells, registry=self.registry, hooks=self.hooks, store=self.store,
                               device=self.device, stop=self.stop, say=self.say, executor=self.executor,
                               lock=self.lock, labels=labels, plugins=self.plugins, evaluation=evaluation,
                               eta=False)
            if self.progress is not None:
                self.progress.trained(sum(max(0, self._steps(c) - before[c.id]) for c in cells))
            if result.interrupted:
                self.interrupted = result.interrupted
                return False
            cells = [c for c in cells if (self.store.cell(c.id).read_summary() or {}).get("status") == "interrupted"]
            if not cells:
                return True
            self.say(f"sweep: {len(cells)} cell(s) lost their worker; resuming them from their checkpoints")
        self.interrupted = "workers that died under their cells"
        return False

    def _steps(self, cell: Cell) -> int:
        return steps_run(self.store.cell(cell.id).read_summary())

    def _ran(self, context: tuple[GroupContext, Budget], cell: Cell | None, request: Request) -> Outcome:
        """A trained (or already trained) trial's outcome, read from its cell; its spending is counted
        and its evaluations so far are reported to the study as intermediate values."""
        assert cell is not None and isinstance(request, Run)  # invalid trials and prunes were settled before
        ctx, budget = context
        summary = self.store.cell(cell.id).read_summary() or {}
        budget.update(cell.id, self._spent(cell, summary))
        limit = request.halt_at_step or float("inf")
        points = [(int(r["step"]), float(r["val_loss"])) for r in self.store.cell(cell.id).read_metrics()
                  if r.get("val_loss") is not None and r.get("step") is not None and r["step"] <= limit]
        ctx.trials.report(request.number, points)
        return self._rung_outcome(cell, request.halt_at_step) or self._outcome(cell, summary)

    def _rung_outcome(self, cell: Cell, halt: int) -> Outcome | None:
        """A rung's result as it was when the cell halted there, read from its metrics rows: a cell
        promoted since then (finished, pruned later, diverged later) must rank the same on replay."""
        if not halt:
            return None
        rows = [r for r in self.store.cell(cell.id).read_metrics() if r.get("step") == halt and "val_loss" in r]
        if not rows or not finite(rows[-1]["val_loss"]):
            return None
        return Outcome(cell.id, "paused", float(rows[-1]["val_loss"]), halt)

    def _spent(self, cell: Cell, summary: dict[str, Any]) -> dict[str, float]:
        fpt = 0.0 if summary.get("budget_used") else flops_per_token(cell.config, self.registry)
        return spent_by(summary, self.store.cell(cell.id), fpt, self.spec.cost_per_hour)

    def _outcome(self, cell: Cell, summary: dict[str, Any]) -> Outcome:
        status = summary.get("status", "error")
        value = summary.get("val_loss") if status == "paused" else summary.get(self.spec.metric)
        if status == "pruned":
            value = summary.get("val_loss", summary.get(self.spec.metric))
        return Outcome(cell.id, status, float(value) if value is not None and finite(value) else None,
                       summary.get("step"))

    def _prune(self, cell: Cell, request: Prune) -> Outcome:
        record = self.store.cell(cell.id)
        summary = record.read_summary() or {}
        if summary.get("status") not in FINAL:
            summary = {**summary, "status": "pruned", "pruned_at_step": summary.get("step"),
                       "budget_used": self._spent(cell, summary)}
            record.write_summary(summary)
            CheckpointStore(record.path / CHECKPOINT_DIR, cell.id).clear()  # a pruned trial never resumes
        return self._outcome(cell, summary)

    def _final_seeds(self, contexts: dict[str, tuple[GroupContext, Budget]]) -> bool:
        if not self.spec.final_seeds:
            return True
        cells = []
        for group in self.groups:
            studies = [contexts[label][0] for label, _ in self.studies(group)]
            # With several studies the group's winner is the best trial of any of them.
            found = [b for b in (best_trial(c.trials.study, self.store, self.spec, with_value=True) for c in studies)
                     if b is not None]
            if not found:
                self.say(f"sweep {group.label}: no finished trial to rerun over final_seeds")
                continue
            sign = -1 if self.spec.direction == "maximize" else 1
            best = min(found, key=lambda pair: sign * pair[1])[0]
            group_cells = [trial_cell(self.matrix, self.spec, group, best.params, self.registry, seed=s, final=True)
                           for s in self.spec.final_seeds]
            for ctx in studies:
                ctx.trials.study.set_user_attr("final_cells", [c.id for c in group_cells])
            cells += group_cells
        # Only the final cells are scored on [eval]'s benchmarks: they are the sweep's results, while
        # scoring every trial would spend evaluation time on configurations the search discards.
        return self._train(cells, {c.id: f"final seeds {c.name}" for c in cells}, self.matrix.evaluation)


def split_studies(spec: SweepSpec, group: Group) -> list[tuple[str, SweepSpec]]:
    """The group's independent searches: one, or ``studies`` (AlgoPerf) with the trial and budget
    limits split between them and a seed of their own each."""
    count = spec.options["studies"]
    if count == 1:
        return [(group.label, spec)]
    out = []
    for k in range(count):
        trials = spec.trials // count + (1 if k < spec.trials % count else 0)
        study = dataclasses.replace(spec, seed=spec.seed + k, trials=trials, max_flops=spec.max_flops / count,
                                    max_time=spec.max_time / count, max_cost=spec.max_cost / count)
        out.append((f"{group.label} study {k + 1}", study))
    return out


def _reached(summary: dict[str, Any], halt: int) -> bool:
    """True when the cell has nothing left to do for this request."""
    status = summary.get("status")
    if status in FINAL:
        return True
    return bool(halt) and status == "paused" and (summary.get("step") or 0) >= halt


def best_trial(study, store: ResultStore, spec: SweepSpec, with_value: bool = False):
    """The group's finished trial with the best metric, read from the cells' own summaries (a
    warm-start trial's from the study: its cell belongs to another matrix)."""
    best, best_value = None, None
    for trial in study.get_trials(deepcopy=False):
        if WARM in trial.user_attrs:
            value = trial.value if trial.state.is_finished() else None
            if not finite(value):
                continue
        else:
            cell = trial.user_attrs.get("cell_id")
            summary = store.cell(cell).read_summary() if cell else None
            value = (summary or {}).get(spec.metric)
            if not summary or summary.get("status") != "ok" or not finite(value) or floor.verdict(summary):
                continue  # an impossible result (below the entropy floor: a leak) is never the winner
        better = best_value is None or (value < best_value if spec.direction == "minimize" else value > best_value)
        if better:
            best, best_value = trial, value
    if with_value:
        return None if best is None else (best, best_value)
    return best
