"""What each `bench` subcommand does, kept apart from argument parsing."""

from __future__ import annotations

import dataclasses
import functools
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Sequence

import torch
from tabulate import tabulate

from bench.cells import Cell, resolve_cells, unused_key_warnings
from bench.components import KINDS
from bench.errors import BenchError
from bench.evaluation.cell_hellaswag import check_eval_settings
from bench.executors import build_executor, executor_settings
from bench.limits import refuse_what_cannot_fit, vocab_size
from bench.matrix import Matrix, load_matrix
from bench.registry import Plugins, PluginSelection, Registry, load_plugins
from bench.report.select import matrix_summaries as _matrix_summaries
from bench.selection import resolve_device, select_cells
from bench.shapes import shapes_only
from bench.store import CellRecord, ResultStore, matrix_names
from bench.terminal import fit_table
from bench.words import plural

# Modules only some commands need are imported inside those commands: pandas (report tables),
# matplotlib (plots), the trainer and the data loaders would otherwise add ~0.6 s to every
# command, `bench list` and `--dry-run` included (benchmarks/startup.py measures it).


def list_components(*, verbose: bool = False, plugins: PluginSelection | None = None) -> int:
    loaded = load_plugins(plugins)
    registry = loaded.registry
    for kind in KINDS:
        entries = registry.entries(kind)
        print(f"\n{kind}s ({len(entries)})")
        rows = [[e.component.name, e.distribution, _format_defaults(e.component.defaults),
                 e.component.description] for e in entries]
        print(fit_table(rows, ["name", "provided by", "defaults", "description"], wrap=(2, 3)))
    for clash in registry.clashes():
        print(f"bench: warning: {clash}; cells that use it fail, the others run", file=sys.stderr)
    if verbose:
        print("\nplugins")
        rows = [[r.name, r.provider.module, r.provider.label, r.status, r.error or ""] for r in loaded.records]
        print(fit_table(rows, ["plugin", "module", "distribution", "status", "error"], wrap=(1, 4)))
    return 0


def list_keys() -> int:
    """The harness keys a cell may set (bench/schema.py), each with its default and rule."""
    from bench.schema import TRAINER_KEYS

    # Defaults as a matrix file writes them (TOML: "text", true, 0.001).
    rows = [[name, "-" if key.default is None else json.dumps(key.default), key.requirement or "-", key.help]
            for name, key in TRAINER_KEYS.items()]
    print(fit_table(rows, ["key", "default", "rule", "meaning"], wrap=(2, 3)))
    print(f"\n{len(rows)} harness keys; each model, optimizer, dataset and schedule adds its own\n"
          "(their defaults are in `bench list`).")
    return 0


def _format_defaults(defaults: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in defaults.items()) or "-"


def run_matrix(path: str, *, device: str, filter_expr: str | None, dry_run: bool, force: bool,
               outputs: str, executor: dict | None = None, plugins: PluginSelection | None = None,
               trackers: Sequence[str] = ()) -> int:
    loaded = load_plugins(plugins)
    registry = loaded.registry
    matrix = load_matrix(path)
    if trackers:  # --tracker: every cell (and sweep trial) also records to these
        named = list(matrix.defaults.get("trackers") or [])
        matrix.defaults["trackers"] = list(dict.fromkeys([*named, *trackers]))
    check_eval_settings(matrix.evaluation, path)
    runner = build_executor(registry, executor_settings(matrix.executor, executor or {}), path)
    if matrix.sweep:  # a search: the sweep proposes the cells (bench/sweep/)
        from bench.sweep.command import run_sweep_matrix
        return run_sweep_matrix(matrix, path, registry=registry, hooks=loaded.hooks, device=device, outputs=outputs,
                                dry_run=dry_run, filter_expr=filter_expr, force=force, executor=runner,
                                plugins=loaded.selection)
    resolved = resolve_cells(matrix, registry)
    cells = select_cells(resolved, filter_expr)
    if dry_run:  # where a matrix is inspected: a training run's stderr stays the one line it needs
        for line in unused_key_warnings(matrix, resolved, registry):
            print(line, file=sys.stderr)
        # each cell's estimate, with a warning for one that cannot fit
        return _dry_run(cells, registry, matrix.name, resolve_device(device))
    refuse_what_cannot_fit([(c.name, c.config) for c in cells if not c.problem], registry, resolve_device(device))
    return _train(cells, matrix, loaded, device=resolve_device(device), force=force, outputs=outputs,
                  runner=runner)


def _train(cells: list[Cell], matrix: Matrix, loaded: Plugins, *, device: torch.device, force: bool, outputs: str,
           runner: Any) -> int:
    from bench.data.loading import data_key, data_problems
    from bench.data.token_cache import tokens_dir
    from bench.lock import MatrixLock, UnwritableResults
    from bench.runner import all_finished, run_cells
    from bench.signals import GracefulStop

    registry = loaded.registry
    store = ResultStore(outputs, matrix.name)
    # The stop turns SIGINT/SIGTERM into "finish the step, checkpoint, exit" (a second signal: at once),
    # installed before any data is loaded; the lock refuses a second run on these outputs (exit 2).
    with GracefulStop() as stop:
        with stop.at_once():  # tokenizing a corpus can take minutes; no step to finish yet
            problems = data_problems([c.config for c in cells if not c.problem], registry)
        cells = [dataclasses.replace(c, problem=problems.get(data_key(c.config, registry))) if not c.problem else c
                 for c in cells]  # a crashing dataset or tokenizer plugin fails only the cells that use it
        lock = MatrixLock(store.path)
        try:
            lock.acquire()
        except UnwritableResults:
            if force or not all_finished(cells, store):
                raise
            # Nothing to write: a read-only copy of finished results still answers `bench run`.
            print(f"bench: {store.path} is read-only, but all {len(cells)} selected cells of {matrix.name!r} are "
                  "already complete; nothing to train", file=sys.stderr)
            _print_perplexities(store, cells)
            return 0
        try:
            store.sweep_temp_files(tokens_dir())  # left by writes a kill interrupted
            print(f"bench: {plural(len(cells), 'cell')} of {matrix.name!r} on {device}, results in {store.path}",
                  file=sys.stderr)
            outcome = run_cells(cells, registry=registry, hooks=loaded.hooks, store=store, device=device,
                                force=force, stop=stop, evaluation=matrix.evaluation, executor=runner, lock=lock,
                                plugins=loaded.selection)
        finally:
            lock.release()
    if outcome.interrupted:
        print(f"bench: stopped by {outcome.interrupted}; run the same command again to resume", file=sys.stderr)
        return stop.exit_code
    _print_perplexities(store, cells)
    print(f"{len(outcome.finished)} trained, {len(outcome.skipped)} already complete, "
          f"{len(outcome.failed)} failed", file=sys.stderr)
    return 1 if outcome.failed else 0


def _print_perplexities(store: ResultStore, cells: list[Cell]) -> None:
    # pandas is imported here, after training, so it never adds to a training run's peak memory.
    from bench.report import tables

    summaries = [s for s in store.summaries() if s["id"] in {c.id for c in cells}]
    frame = tables.sort_frame(tables.summaries_frame(summaries), "name")
    print(tables.render(_with_hellaswag(tables.perplexity_table(frame), frame), "text", tables.config_formats(frame)))


def _dry_run(cells: list[Cell], registry: Registry, matrix_name: str, device: torch.device) -> int:
    """The buildable cells as a table, then one line per cell a plugin cannot build (exit 2 if any)."""
    buildable = [cell for cell in cells if not cell.problem]
    if buildable:
        print(_dry_run_table(buildable, registry, device))
    for cell in cells:
        if cell.problem:
            print(f"bench: error: {cell.problem}", file=sys.stderr)
    for line in _pairing_warnings(buildable, registry):
        print(line, file=sys.stderr)
    unbuildable = f", {len(cells) - len(buildable)} of them unbuildable" if len(buildable) < len(cells) else ""
    print(f"{plural(len(cells), 'cell')} in matrix {matrix_name!r}{unbuildable}; nothing trained (--dry-run)")
    return 2 if len(buildable) < len(cells) else 0


def _pairing_warnings(cells: list[Cell], registry: Registry) -> list[str]:
    """One line per optimizer/schedule pairing that bench.schedule_free warns about, with its cells."""
    from bench.schedule_free import schedule_free_problem

    by_problem: dict[str, list[str]] = {}
    for cell in cells:
        problem = schedule_free_problem(cell.config, registry)
        if problem:
            by_problem.setdefault(problem, []).append(cell.name)
    return [f"bench: warning: {plural(len(names), 'cell')} ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})"
            f": {problem}" for problem, names in by_problem.items()]


def _dry_run_table(cells: list[Cell], registry: Registry, device: torch.device) -> str:
    """One row per cell: sizes, FLOPs per token, planned steps, tokens and training FLOPs, and the
    estimated training memory; then one warning line per cell whose estimate exceeds the device's
    free memory."""
    from bench.budget import planned_steps
    from bench.training.footprint import estimate_training_bytes, free_bytes, too_large_warning

    rows: list[list[str]] = []
    warnings: list[str | None] = []
    train_tokens: dict[tuple, int] = {}
    free = free_bytes(device)
    for cell in cells:
        config = cell.config
        component = registry.get("model", config["model"])
        vocab = vocab_size(config, registry)
        with shapes_only():
            model = component.build(config, vocab)
        counts = model.parameter_counts()
        per_token = model.flops_per_token(config["seq_len"])
        _, steps = planned_steps(config, _train_tokens(config, registry, train_tokens), per_token)
        tokens = steps * config["batch_size"] * config["grad_accum"] * config["seq_len"]
        estimate = estimate_training_bytes(config, counts["total"], vocab)
        warnings.append(too_large_warning(estimate, free, cell.name))
        rows.append([cell.id, cell.name, f"{counts['total']:,}", f"{counts['non_embedding']:,}", f"{per_token:.3g}",
                     f"{steps:,}", f"{tokens:,}", f"{per_token * tokens:.3g}", f"{estimate['total'] / (1 << 30):.2f}"])
    table = tabulate(rows, headers=["id", "name", "params", "non-embedding", "train FLOPs/token", "steps", "tokens",
                                    "train FLOPs", "est. GiB"], disable_numparse=True)
    return "\n".join([table, *(line for line in warnings if line)])


def _train_tokens(config: dict, registry: Registry, cache: dict) -> int:
    from bench.budget import train_split_tokens
    return train_split_tokens(config, registry, cache)




def report(*, outputs: str, matrix: str | None, sort: str, fmt: str, where: list[str] | None = None,
           plots: str | None = None, peak_tflops: float | None = None, which: list[str] | None = None,
           target: str | None = None, profiles: bool = False, algorithm: str = "optimizer", measure: str = "time",
           tolerance: float = 1.02, best_config: str | None = None, alpha: float = 0.05,
           target_alpha: float = 0.01, sigma: float = 0.0013, z_margin: float = 0.004,
           reference: str | None = None, plugins: PluginSelection | None = None) -> int:
    if best_config:
        return write_best_config(outputs, matrix, best_config, plugins)
    _WARNED_DAMAGED.clear()  # each report says once per damaged sweep.db
    from bench.report import analysis as analysis_report
    from bench.report import hellaswag as hellaswag_report
    from bench.report import tables
    from bench.report.estimate import estimate_vs_actual
    from bench.sweep import report as sweep_report

    if fmt not in tables.FORMATS:
        raise BenchError(f"unknown format {fmt!r}; use one of {', '.join(tables.FORMATS)}")
    if peak_tflops is not None and peak_tflops <= 0:
        raise BenchError(f"--peak-tflops must be > 0, got {peak_tflops}")
    for flag, value in (("--alpha", alpha), ("--target-alpha", target_alpha)):
        if not 0 < value < 1:
            raise BenchError(f"{flag} {value:g}: a significance level is between 0 and 1, e.g. 0.05")
    for flag, value in (("--sigma", sigma), ("--z-margin", z_margin)):
        if value <= 0:
            raise BenchError(f"{flag} {value:g} must be > 0")
    document = {}
    for name, summaries in _matrix_summaries(outputs, matrix, where).items():
        frame = tables.sort_frame(tables.summaries_frame(summaries), sort)
        sections = tables.build_sections(frame, sort=sort, peak_tflops=peak_tflops,
                                         which=tuple(w for w in which or tables.TABLE_KEYS
                                                     if w not in ("hellaswag", "sweep", "estimate",
                                                                  *analysis_report.TABLE_KEYS)))
        for section in sections:
            if section.key == "perplexity":
                section.table = _with_hellaswag(section.table, frame)
                section.notes += [n for n in [analysis_report.one_seed_note(summaries)] if n]
        if hellaswag_report.has_hellaswag(frame) and (not which or "hellaswag" in which):
            sections.append(tables.Section("hellaswag", "HellaSwag", hellaswag_report.hellaswag_table(frame)))
        store = ResultStore(outputs, name)
        estimated = estimate_vs_actual(store.path, summaries)
        if estimated is not None and (not which or "estimate" in which):
            sections.append(estimated)
        if sweep_report.has_sweep(store) and (not which or "sweep" in which):
            sections += _unless_damaged(sweep_report.sweep_sections, store, [])
        sections += analysis_report.analysis_sections(
            summaries, lambda cell_id, store=store: store.cell(cell_id).read_metrics(), which=which, target=target,
            want_profiles=profiles, algorithm=algorithm, measure=measure, tolerance=tolerance,
            profile_png=Path(plots or Path(outputs) / "plots") / name / "performance_profile.png", title=name,
            alpha=alpha, profile_cells=_final_cells(store) if profiles else None)
        sections += _protocol_sections(store, summaries, which=which, target=target, alpha=alpha,
                                       target_alpha=target_alpha, sigma=sigma, z_margin=z_margin,
                                       reference=reference, algorithm=algorithm, measure=measure, tolerance=tolerance)
        flagged = tables.impossible_note(frame)
        if flagged is not None:
            for section in sections:  # every table of the matrix carries the warning
                section.notes.insert(0, flagged)
        document[name] = sections
        if plots:
            from bench.report.plots import write_plots
            written = write_plots(store, plots, summaries, sweep_report.cell_groups(_sweep_groups(store)))
            if sweep_report.has_sweep(store):
                written += _unless_damaged(lambda store: sweep_report.write_sweep_plots(store, plots), store, [])
            print(f"bench: {len(written)} plots of {name!r} in {Path(plots) / name}", file=sys.stderr)
    print(tables.render_document(document, fmt))
    return 0


_WARNED_DAMAGED: set[str] = set()  # sweep.db files already reported damaged by this command


def _unless_damaged(read: Any, store: ResultStore, instead: Any) -> Any:
    """``read(store)`` for a report; a damaged sweep.db is one warning (once per command) and
    ``instead``, so the report still shows every other table."""
    from bench.sweep.trials import DamagedStorage

    try:
        return read(store)
    except DamagedStorage as exc:
        if str(store.path) not in _WARNED_DAMAGED:
            _WARNED_DAMAGED.add(str(store.path))
            print(f"bench: warning: {exc}; its sweep tables are left out of this report", file=sys.stderr)
        return instead


def _sweep_groups(store: ResultStore) -> list:
    """A sweep's groups as its report reads them; [] for a plain matrix or a damaged sweep.db."""
    from bench.sweep import report as sweep_report

    return _unless_damaged(sweep_report.load_groups, store, []) if sweep_report.has_sweep(store) else []


def estimate(path: str, *, device: str, filter_expr: str | None, steps: int, cost_per_hour: float,
             outputs: str, plugins: PluginSelection | None = None) -> int:
    """`bench estimate`: time a few real steps of every cell, project hours and dollars, write estimate.json."""
    from bench.data.loading import check_data_available
    from bench.estimate import ESTIMATE_FILE, check_steps, measure_cell, noisy_warning, project, shape_key, totals
    from bench.fileio import atomic_write_json
    from bench.report.estimate import estimate_table

    check_steps(steps, cost_per_hour)
    registry = load_plugins(plugins).registry
    matrix = load_matrix(path)
    cells = [c for c in select_cells(resolve_cells(matrix, registry), filter_expr) if not c.problem]
    if not cells:
        raise BenchError(f"--filter {filter_expr!r} matches none of the matrix's cells")
    target = resolve_device(device)
    check_data_available([c.config for c in cells], registry)
    shapes = {shape_key(c.config) for c in cells}
    say = functools.partial(print, file=sys.stderr, flush=True)
    say(f"bench: {plural(len(cells), 'cell')}, {plural(len(shapes), 'distinct step shape')} to time ({steps} steps "
        f"each) on {target}")
    estimates, measured = [], {}
    for position, cell in enumerate(cells, start=1):
        key = shape_key(cell.config)
        if key not in measured:
            say(f"[{position}/{len(cells)}] {cell.name}: timing {steps} steps on {target}")
            measured[key] = measure_cell(cell, registry, target, steps=steps, say=say)
        done = project(cell, measured[key], cost_per_hour)
        estimates.append(done)
        running = totals(estimates)
        source = f" (steps timed on {done.measured_by})" if done.measured_by else ""
        say(f"[{position}/{len(cells)}] {cell.name}: worst step {done.worst_step_ms:.1f} ms x {done.planned_steps:,} "
            f"steps = {done.hours:.3f} h, ${done.cost:.2f} (median step {done.median_step_ms:.1f} ms: "
            f"{done.median_hours:.3f} h){source}; running total {running['hours']:.3f} h, ${running['cost']:.2f}")
        warning = None if done.measured_by else noisy_warning(done)
        if warning:
            say(warning)
    total = totals(estimates)
    print(estimate_table(estimates, total))
    store = ResultStore(outputs, matrix.name)
    atomic_write_json(store.path / ESTIMATE_FILE, {
        "matrix": matrix.name, "device": str(target), "steps": steps, "cost_per_hour": cost_per_hour,
        "rule": "hours = worst of steps 10-19 (ms) x planned steps / 3.6e6; cost = hours x cost_per_hour; "
                "median_hours uses the median of the same steps; cells of one step shape share one timing",
        "cells": [e.as_dict() for e in estimates], "totals": total})
    say(f"bench: matrix total {total['hours']:.3f} hours, ${total['cost']:.2f} at ${cost_per_hour:.2f}/hour "
        f"(median-step total {total['median_hours']:.3f} hours); {plural(len(cells), 'cell')}, {len(measured)} timed; "
        f"written to {store.path / ESTIMATE_FILE}")
    return 0


def write_best_config(outputs: str, matrix: str | None, path: str, plugins: PluginSelection | None = None) -> int:
    """`bench report --best-config FILE`: the best trial of each sweep group as a plain matrix file
    (bench/sweep/best_config.py); the plugins tell which values are defaults."""
    from bench.fileio import atomic_write_bytes
    from bench.sweep import report as sweep_report
    from bench.sweep.best_config import best_config_toml

    names = [matrix] if matrix else [n for n in matrix_names(outputs)
                                     if sweep_report.has_sweep(ResultStore(outputs, n))]
    if len(names) != 1 or not sweep_report.has_sweep(ResultStore(outputs, names[0])):
        raise BenchError(f"--best-config needs exactly one sweep under {outputs!r} "
                         f"(found {', '.join(names) or 'none'}); name it with --matrix")
    text = best_config_toml(ResultStore(outputs, names[0]), load_plugins(plugins).registry)
    if not text:
        raise BenchError(f"sweep {names[0]!r} has no finished trial yet; run it first")
    atomic_write_bytes(Path(path), text.encode())
    print(f"bench: best configuration of {names[0]!r} written to {path}; `bench run {path} --outputs {outputs}` "
          "reuses the cells the sweep already trained", file=sys.stderr)
    return 0


def plot(*, outputs: str, matrix: str | None, out: str, where: list[str] | None = None) -> int:
    """Loss/perplexity curves of every selected cell, and one overview per matrix, as PNG files."""
    from bench.report.plots import write_plots
    from bench.sweep import report as sweep_report

    total = 0
    for name, summaries in _matrix_summaries(outputs, matrix, where).items():
        store = ResultStore(outputs, name)
        written = write_plots(store, out, summaries, sweep_report.cell_groups(_sweep_groups(store)))
        total += len(written)
        for path in written:
            print(path)
    if not total:
        raise BenchError("no cell has recorded validation metrics to plot; run `bench run MATRIX` first")
    return 0


def _final_cells(store: ResultStore) -> set[str] | None:
    """A sweep's final rerun cells (what its profiles compare), or None for a plain matrix."""
    from bench.sweep import report as sweep_report

    if not sweep_report.has_sweep(store):
        return None
    return set(sweep_report.final_labels(_sweep_groups(store))) or None


def _protocol_sections(store: ResultStore, summaries: list[dict], *, which, target, alpha, target_alpha, sigma,
                       z_margin, reference, algorithm, measure, tolerance) -> list:
    """The fair comparison of a sweep's final seeds (or a plain matrix's configurations), target
    tests, speedups and the studies x trials profile (bench/report/protocols.py)."""
    from bench.report import analysis as analysis_report
    from bench.report import protocols as protocols_report
    from bench.sweep import report as sweep_report

    done = analysis_report.finished(summaries)
    groups = _sweep_groups(store)
    labels = sweep_report.final_labels(groups)
    fair = bool(labels)
    if not fair:
        labels = protocols_report.plain_labels(done, analysis_report.varying_axes(done))
    override = analysis_report.parse_target(target)
    goal = override if override is not None else next(
        (t for t in (analysis_report.cell_target(s, None) for s in done) if t is not None), None)
    read = lambda cell_id: store.cell(cell_id).read_metrics()  # noqa: E731
    warnings = sweep_report.edge_warnings(groups)
    trial_ids = {r.attrs.get("cell_id") for g in groups for r in g.trials}
    reused = sorted({str((s.get("config") or {}).get("seed")) for s in done
                     if s["id"] in labels and s["id"] in trial_ids})
    if fair and reused:
        warnings.append(f"Seed(s) {', '.join(reused)} of final_seeds are the search's own seed: those reruns are the "
                        f"trial cells that won, not fresh runs, so the winner's mean is biased low (selected on "
                        f"that seed); use final_seeds the search did not use.")
    sections = protocols_report.protocol_sections(
        summaries, read, labels=labels, fair=fair, warnings=warnings, which=which,
        target=goal, alpha=alpha, target_alpha=target_alpha, sigma=sigma, margin=z_margin, reference=reference,
        algorithm=algorithm)
    trials = sweep_report.studies_trials(groups, algorithm)
    if len(trials) and (which is None or "studies" in which):
        sections += analysis_report.studies_profile_sections(trials, summaries, read, measure=measure,
                                                             tolerance=tolerance, override=override)
    return sections


def _with_hellaswag(table, frame):
    """The perplexity table plus acc/acc_norm columns when any cell has HellaSwag results."""
    from bench.report import hellaswag as hellaswag_report

    return hellaswag_report.with_accuracy_columns(table, frame) if hellaswag_report.has_hellaswag(frame) else table


def eval_hellaswag(*, run: str, limit: int, batch_size: int, device: str,
                   plugins: PluginSelection | None = None, log_samples: bool = False) -> int:
    """Re-score one finished cell folder on HellaSwag and store the figures in its summary."""
    from bench.evaluation.cell_hellaswag import describe, score_cell, write_fields
    from bench.evaluation.checkpoint_loading import NotTextCell

    if limit < 0 or batch_size < 1:
        raise BenchError(f"--limit must be >= 0 and --batch-size >= 1, got {limit} and {batch_size}")
    registry = load_plugins(plugins).registry
    target = resolve_device(device)
    try:
        fields = score_cell(run, registry, target, limit=limit, batch_size=batch_size, progress=True,
                            log_samples=log_samples)
    except NotTextCell as exc:
        write_fields(CellRecord(Path(run)), {"hellaswag_note": f"skipped: {exc}"})
        print(f"bench: hellaswag skipped: {exc}", file=sys.stderr)
        return 0
    print(describe(fields))
    return 0
