"""Cost of `bench fit isoflop` on a 72-run IsoFLOP grid (CS336 assignment-3 shape: 9 budgets x 8
sizes, simulated from Hoffmann et al.'s law with 0.5 % loss noise), this checkout against a git
revision (default main), in interleaved rounds so drifts in machine load hit both alike.

- In process: the IsoFLOP bootstrap, 1,000 resamples (``scaling._bootstrap``), the revision's module
  against this one's (goal: < 0.5 s), with the 95 % intervals of the N_opt exponent both give;
  and this checkout's approach-3 bootstrap (1,000 resamples, new work with no counterpart before).
- Whole command in fresh interpreters: the revision's `bench fit isoflop` on the 72 runs written as
  cell folders, this checkout's on the same folders, and this checkout's `--from` the JSON file
  (goal: < 5 s).

    python benchmarks/fit_bootstrap.py --rounds 5 --write benchmarks/results/fit_bootstrap.md
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from startup import REPO, export_revision, time_once  # noqa: E402

from bench.analysis import approach3, scaling, simulate  # noqa: E402
from bench.store import ResultStore  # noqa: E402


def revision_module(revision: str, path: str, name: str):
    """One module of ``revision``, loaded under ``name`` (its own imports resolve to this checkout)."""
    text = subprocess.run(["git", "-C", str(REPO), "show", f"{revision}:{path}"], capture_output=True, check=True,
                          text=True).stdout
    file = Path(tempfile.mkdtemp()) / f"{name}.py"
    file.write_text(text)
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[name] = module  # dataclasses look their module up while the class is created
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def write_cells(runs, outputs: Path, name: str) -> None:
    """The runs as finished cell folders, the shape `bench fit isoflop MATRIX` reads."""
    store = ResultStore(outputs, name)
    for i, run in enumerate(runs.itertuples()):
        cell = f"cell{i:02d}"
        record = store.cell(cell)
        record.write_config({"id": cell})
        record.write_summary({"id": cell, "name": cell, "status": "ok", "best_val_loss": run.loss,
                              "params_total": run.n, "train_tokens": run.d,
                              "config": {"dataset": "simulated", "max_flops": run.budget}})


def _head() -> str:
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain"], capture_output=True, text=True).stdout
    return head.stdout.strip() + (" (uncommitted changes)" if dirty.strip() else "")


def timed(call) -> tuple[float, object]:
    started = time.perf_counter()
    result = call()
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", default="main", help="git revision to compare with (default main)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--write", type=Path, help="also append the markdown to this file")
    args = parser.parse_args()

    runs = simulate.isoflop_runs(noise=0.005, seed=1)
    old = revision_module(args.before, "bench/analysis/scaling.py", "scaling_before")
    boot: dict[str, list[float]] = {"before": [], "this": [], "approach 3": []}
    law = approach3.fit(runs["n"], runs["d"], runs["loss"]).law
    counts = scaling.counts_within_budgets(runs["budget"], 1000, np.random.default_rng(0))
    for _ in range(args.rounds):
        seconds, old_samples = timed(lambda: old._bootstrap(runs, 1000, np.random.default_rng(0)))
        boot["before"].append(seconds)
        seconds, new_samples = timed(lambda: scaling._bootstrap(runs, 1000, np.random.default_rng(0)))
        boot["this"].append(seconds)
        boot["approach 3"].append(timed(lambda: approach3.bootstrap(runs["n"], runs["d"], runs["loss"], counts,
                                                                     law))[0])

    work = Path(tempfile.mkdtemp(prefix="bench-fit-"))
    (work / "isoflops_curves.json").write_text(json.dumps(simulate.cs336_records(runs)))
    write_cells(runs, work / "outputs", "cs336")
    before_tree = export_revision(args.before)
    commands = {
        ("before", "fit isoflop cs336 (cell folders)"): (["-m", "bench.cli", "fit", "isoflop", "cs336", "--outputs",
                                                          str(work / "outputs"), "--out", str(work / "a")],
                                                         before_tree),
        ("this", "fit isoflop cs336 (cell folders)"): (["-m", "bench.cli", "fit", "isoflop", "cs336", "--outputs",
                                                        str(work / "outputs"), "--out", str(work / "b")], REPO),
        ("this", "fit isoflop --from isoflops_curves.json"): (["-m", "bench.cli", "fit", "isoflop", "--from",
                                                               str(work / "isoflops_curves.json"), "--outputs",
                                                               str(work / "c")], REPO),
    }
    for command, tree in commands.values():  # warm the file and bytecode caches
        time_once(command, tree)
    whole: dict[tuple[str, str], list[tuple[float, float]]] = {key: [] for key in commands}
    for _ in range(args.rounds):
        for key, (command, tree) in commands.items():
            whole[key].append(time_once(command, tree))

    def interval(samples) -> str:
        low, high = np.percentile(samples[:, 1], [2.5, 97.5])
        return f"[{low:.4f}, {high:.4f}]"

    med = {k: statistics.median(v) for k, v in boot.items()}
    lines = [f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
             f"- machine: {platform.node()} ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
             f"load average {os.getloadavg()[0]:.2f} at the end), Python {platform.python_version()}, "
             f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}",
             f"- data: 72 runs (9 budgets x 8 sizes) from L = 1.69 + 406.4/N^0.34 + 410.7/D^0.28, 0.5 % noise; "
             f"{args.rounds} interleaved rounds, medians; before = {args.before}, this = {_head()}",
             "",
             "| bootstrap, 1,000 resamples | median s | N_opt exponent 95% interval |",
             "|---|---|---|",
             f"| IsoFLOP, before (one refit per resample) | {med['before']:.3f} | {interval(old_samples)} |",
             f"| IsoFLOP, this (all resamples at once) | {med['this']:.4f} | {interval(new_samples)} |",
             f"| approach 3, this (new) | {med['approach 3']:.3f} | - |",
             "",
             f"IsoFLOP bootstrap: before / this = {med['before'] / med['this']:.0f}x (ratio of medians)",
             "",
             "| checkout | command | median wall s | median CPU s |",
             "|---|---|---|---|"]
    for (label, name), samples in whole.items():
        lines.append(f"| {label} | {name} | {statistics.median(s[0] for s in samples):.2f} | "
                     f"{statistics.median(s[1] for s in samples):.2f} |")
    before_key, this_key = list(whole)[:2]
    ratio = statistics.median(s[0] for s in whole[before_key]) / statistics.median(s[0] for s in whole[this_key])
    lines.append(f"\nWhole command on the cell folders: before / this = {ratio:.2f}x wall (ratio of medians); "
                 "this one also runs both IsoFLOP methods, approach 3's bootstrap and leave-one-budget-out.")
    text = "\n".join(lines)
    print(text)
    if args.write:
        with args.write.open("a", encoding="utf-8") as handle:
            handle.write(text + "\n\n")


if __name__ == "__main__":
    main()
