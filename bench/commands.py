"""What each `bench` subcommand does, kept apart from argument parsing."""

from __future__ import annotations

import sys

import torch
from tabulate import tabulate

from bench.cells import Cell, component_params, resolve_cells
from bench.components import KINDS
from bench.data.loading import check_data_available
from bench.errors import BenchError
from bench.matrix import load_matrix
from bench.registry import Registry, build_registry, plugin_manager
from bench.report import tables
from bench.runner import resolve_device, run_cells, select_cells
from bench.store import ResultStore, matrix_names


def _registry() -> tuple[object, Registry]:
    manager = plugin_manager()
    return manager, build_registry(manager)


def list_components() -> int:
    _, registry = _registry()
    for kind in KINDS:
        entries = registry.entries(kind)
        print(f"\n{kind}s ({len(entries)})")
        rows = [[e.component.name, e.distribution, _format_defaults(e.component.defaults),
                 e.component.description] for e in entries]
        print(tabulate(rows, headers=["name", "provided by", "defaults", "description"], tablefmt="simple"))
    return 0


def _format_defaults(defaults: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in defaults.items()) or "-"


def run_matrix(path: str, *, device: str, filter_expr: str | None, dry_run: bool, force: bool,
               outputs: str) -> int:
    manager, registry = _registry()
    matrix = load_matrix(path)
    cells = select_cells(resolve_cells(matrix, registry), filter_expr)
    if not cells:
        raise BenchError(f"--filter {filter_expr!r} matches none of the matrix's cells")
    if dry_run:
        print(_dry_run_table(cells, registry))
        print(f"{len(cells)} cells in matrix {matrix.name!r}; nothing trained (--dry-run)")
        return 0
    target = resolve_device(device)
    check_data_available([c.config for c in cells], registry)
    store = ResultStore(outputs, matrix.name)
    print(f"bench: {len(cells)} cells of {matrix.name!r} on {target}, results in {store.path}", file=sys.stderr)
    outcome = run_cells(cells, registry=registry, hooks=manager.hook, store=store, device=target, force=force)
    summaries = [s for s in store.summaries() if s["id"] in {c.id for c in cells}]
    frame = tables.sort_frame(tables.summaries_frame(summaries), "name")
    print(tables.render(tables.perplexity_table(frame), "github"))
    print(f"{len(outcome.finished)} trained, {len(outcome.skipped)} already complete, "
          f"{len(outcome.failed)} failed", file=sys.stderr)
    return 1 if outcome.failed else 0


def _dry_run_table(cells: list[Cell], registry: Registry) -> str:
    rows = []
    for cell in cells:
        config = cell.config
        component = registry.get("model", config["model"])
        with torch.device("meta"):
            model = component.factory(_vocab_size(config, registry), **component_params(config, component))
        counts = model.parameter_counts()
        rows.append([cell.id, cell.name, f"{counts['total']:,}", f"{counts['non_embedding']:,}",
                     f"{model.flops_per_token(config['seq_len']):.3g}"])
    return tabulate(rows, headers=["id", "name", "params", "non-embedding", "train FLOPs/token"])


def _vocab_size(config: dict, registry: Registry) -> int:
    if config["tokenizer"] is None:
        return int(config["vocab_size"])
    tokenizer = registry.get("tokenizer", config["tokenizer"])
    return tokenizer.factory(**component_params(config, tokenizer)).vocab_size


def report(*, outputs: str, matrix: str | None, sort: str, fmt: str) -> int:
    names = [matrix] if matrix else matrix_names(outputs)
    if not names:
        raise BenchError(f"no results under {outputs!r}; run `bench run MATRIX` first")
    for name in names:
        summaries = ResultStore(outputs, name).summaries()
        if not summaries:
            raise BenchError(f"no results for matrix {name!r} under {outputs!r}; known: "
                             f"{', '.join(matrix_names(outputs)) or 'none'}")
        frame = tables.sort_frame(tables.summaries_frame(summaries), sort)
        if len(names) > 1 or fmt not in ("csv",):
            print(f"\n## {name}: perplexity\n")
        print(tables.render(tables.perplexity_table(frame), fmt))
    return 0
