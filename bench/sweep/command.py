"""`bench run` on a matrix with a ``[sweep]`` table."""

from __future__ import annotations

import sys
from typing import Any

from tabulate import tabulate

from bench.data.loading import check_data_available
from bench.errors import BenchError
from bench.limits import refuse_what_cannot_fit
from bench.lock import MatrixLock
from bench.matrix import Matrix
from bench.registry import Registry
from bench.selection import resolve_device
from bench.signals import GracefulStop
from bench.store import ResultStore
from bench.sweep.driver import SweepRun, split_studies
from bench.sweep.groups import Group, build_groups, check_space
from bench.sweep.ledger import check_length_known
from bench.sweep.spec import PLANNED, SweepSpec, final_seeds_note, parse_sweep


def prepare(matrix: Matrix, registry: Registry, where: str) -> tuple[SweepSpec, list[Group], list[dict]]:
    """Parse and check the sweep completely; writes nothing."""
    spec = parse_sweep(matrix.sweep, where, trial_seed=matrix.seeds[0])
    groups = build_groups(matrix, spec, registry, where)
    configs = check_space(groups, spec, matrix, registry, where,
                          warn=lambda line: print(f"bench: {line}", file=sys.stderr))
    if spec.options.get("max_total_flops"):
        for config in configs:
            check_length_known(config, where)
    return spec, groups, configs


def describe(spec: SweepSpec, groups: list[Group]) -> str:
    lines = [f"sweep: strategy {spec.strategy}, seed {spec.seed}, metric {spec.metric} ({spec.direction}), "
             f"{len(groups)} group(s): {', '.join(g.label for g in groups)}"]
    for name, param in spec.space.items():
        lines.append(f"  {name}: {param.describe()}")
    budgets = ", ".join(f"{k} {v:g}" for k, v in spec.budgets.items()) or "none"
    lines.append(f"  budget per group: {budgets}")
    if spec.options.get("max_total_flops"):
        lines.append(f"  FLOP ledger over all groups: max_total_flops {spec.options['max_total_flops']:g} "
                     f"(each trial charged as it starts; a repeated configuration reuses its cell for free)")
    if spec.options["studies"] > 1:
        lines.append(f"  {spec.options['studies']} independent studies per group (AlgoPerf), the budget split "
                     f"between them, seeds {spec.seed}..{spec.seed + spec.options['studies'] - 1}")
    if spec.options["pruner"] != "none":
        lines.append(f"  pruner: Optuna {spec.options['pruner']} at every "
                     f"{spec.options['prune_every'] or 'eval_every'} steps")
    if spec.options["warm_start"]:
        lines.append(f"  warm start from the finished cells of {', '.join(spec.options['warm_start'])}")
    if spec.strategy in PLANNED:
        lines.append("  each rung's trials are one batch, trained together (in parallel with --jobs or Ray)")
    elif spec.options["batch"] > 1:
        lines.append(f"  batch: {spec.options['batch']} trials asked and trained together")
    if spec.strategy in PLANNED:
        rows = [[b.s] + [f"{r.configs} x {r.resource}" for r in b.rungs] for b in spec.brackets()]
        lines.append(f"  {'rungs' if spec.strategy == 'asha' else 'brackets'} (configurations x units of "
                     f"{spec.options['resource_steps']} steps):")
        lines.append(tabulate(rows, headers=["s"] + [f"rung {i}" for i in range(len(rows[0]) - 1)]))
    if spec.final_seeds:
        extra = ", ".join(f"{k} = {v}" for k, v in spec.final_overrides.items())
        note = final_seeds_note(spec.final_seeds, spec.trial_seed)
        lines.append(f"  then the best of each group over seeds {spec.final_seeds} ({note})"
                     + (f" with {extra}" if extra else ""))
    return "\n".join(lines)


def run_sweep_matrix(matrix: Matrix, path: str, *, registry: Registry, hooks: Any, device: str, outputs: str,
                     dry_run: bool, filter_expr: str | None, force: bool, executor: Any = None,
                     plugins: Any = None) -> int:
    if filter_expr or force:
        raise BenchError(f"{path}: --filter and --force do not apply to a sweep; narrow the sweep with "
                         f"sweep.per or [matrix], or move outputs/{matrix.name} away to start over")
    spec, groups, configs = prepare(matrix, registry, path)
    if dry_run:
        from bench.sweep.dryrun import describe_trials  # times a few steps: the training stack loads here

        print(describe(spec, groups))
        check_data_available(configs, registry)
        studies = [(g, label, s) for g in groups for label, s in split_studies(spec, g)]
        print(describe_trials(matrix, spec, studies, registry, resolve_device(device)))
        print("nothing trained (--dry-run): the times come from a few timed steps per group, then discarded")
        return 0
    target = resolve_device(device)
    refuse_what_cannot_fit([(f"{path}: sweep cell {config['model']}/{config['optimizer']}", config)
                            for config in configs], registry, target)
    check_data_available(configs, registry)
    store = ResultStore(outputs, matrix.name)
    with MatrixLock(store.path) as lock, GracefulStop() as stop:
        print(f"bench: sweep of {matrix.name!r} on {target}, results in {store.path}", file=sys.stderr)
        print(describe(spec, groups), file=sys.stderr)
        sweep = SweepRun(matrix, spec, groups, registry, hooks, store, target, stop=stop, executor=executor, lock=lock,
                         say=lambda line: print(line, file=sys.stderr, flush=True), plugins=plugins)
        finished = sweep.run()
    if not finished:
        print(f"bench: stopped by {sweep.interrupted}; run the same command again to resume the sweep",
              file=sys.stderr)
        return stop.exit_code if stop.requested else 1
    from bench.report.render import render_document
    from bench.sweep.report import load_groups, sweep_sections
    print(render_document({matrix.name: sweep_sections(store)}, "text"))  # as `bench report` prints it
    return _exit_code(load_groups(store), store)


def _exit_code(groups: list, store: ResultStore) -> int:
    """1 (with one line per group) when a group's search found nothing: none of its trials finished."""
    from collections import Counter

    failed = [g for g in groups if g.trials and not any(t.status == "ok" for t in g.trials)]
    for group in failed:
        counts = Counter(t.status for t in group.trials)
        print(f"bench: every trial of sweep group {group.label!r} failed "
              f"({', '.join(f'{n} {status}' for status, n in counts.most_common())}); the reason of each is in "
              f"its summary.json and traceback.txt under {store.path}, fix it and run the same command again",
              file=sys.stderr)
    return 1 if failed else 0
