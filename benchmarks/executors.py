"""What the executors buy and cost: --jobs 1 vs --jobs 2 on CPU, and Ray's per-cell overhead.

A 4-cell CPU matrix (gpt1, synthetic data; every cell single-threaded: torch.set_num_threads(1)
in this process for --jobs 1, and 2 cores / 2 jobs = 1 thread per worker for --jobs 2) runs in
alternating rounds through three executors, each from scratch (``force``):

* ``local --jobs 1``: the cells one after another in this process;
* ``local --jobs 2``: two spawned worker processes (their start-up is part of the time);
* ``ray`` with one task in flight (``jobs = 1``, ``num_cpus = 1``) on a local Ray cluster started
  once beforehand. Ray's overhead per cell is measured two ways: (ray - jobs 1) / cells from the
  wall times, and directly, per cell, as the driver's round trip (pack, ship, schedule, run, ship
  back, write) minus the seconds ``run_cell`` took inside the task; the second does not depend on
  how busy the machine was between rounds. The cluster's start-up is reported apart.

Control: before each round, how many cores the machine actually gives (two processes spinning a
fixed pure-Python loop at once vs one alone: 2.0 on an idle 2-core machine). On a shared machine
that figure, not the core count, bounds what ``--jobs 2`` can gain.

Reported: medians over rounds, the speed-up as the ratio of medians, the overheads per cell.

``--sweep`` measures a sweep instead: a random search over lr on the same cells (4 trials,
``batch = --batch``, default 2: two rounds of two cells) with ``--jobs 1`` and ``--jobs 2``,
interleaved. The pool keeps its two workers for the whole sweep (started once, part of the time).

    python benchmarks/executors.py --rounds 3 --write benchmarks/results/executors.md
    python benchmarks/executors.py --sweep --rounds 3
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

from bench.cells import resolve_cells
from bench.executors.local import LocalExecutor, cpu_cores
from bench.matrix import parse_matrix
from bench.registry import build_registry, plugin_manager
from bench.runner import run_cells
from bench.store import ResultStore


def matrix(steps: int) -> dict:
    return {"name": "executors", "defaults": {
        "dataset": "synthetic", "model": "gpt1", "n_layer": 2, "n_embd": 64, "n_head": 4, "n_positions": 64,
        "seq_len": 64, "batch_size": 16, "max_steps": steps, "steps_per_epoch": steps, "log_every": 50,
        "checkpoint": False, "memory_interval_ms": 0},
        "matrix": {"optimizer": ["adamw", "adam", "sgd", "momentum"]}}


SPIN = "import time; t = time.perf_counter(); sum(i * i for i in range(6_000_000)); print(time.perf_counter() - t)"


def cores_available() -> float:
    """2 x (one spinner alone) / (the slower of two at once): the cores this machine gives right now."""
    alone = float(subprocess.run([sys.executable, "-c", SPIN], capture_output=True, text=True, check=True).stdout)
    pair = [subprocess.Popen([sys.executable, "-c", SPIN], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    together = max(float(p.communicate()[0]) for p in pair)
    return 2 * alone / together


def sweep_matrix(steps: int, batch: int) -> dict:
    base = matrix(steps)
    return {**base, "name": "sweep", "matrix": {},
            "defaults": {**base["defaults"], "optimizer": "adamw", "max_steps": steps},
            "sweep": {"strategy": "random", "trials": 4, "batch": batch, "seed": 0,
                      "space": {"lr": {"loguniform": [1e-4, 1e-2]}}}}


def timed_sweep(steps: int, batch: int, registry, manager, executor, outputs: Path) -> float:
    from bench.sweep.command import prepare
    from bench.sweep.driver import SweepRun
    parsed = parse_matrix(sweep_matrix(steps, batch), default_name="sweep", where="benchmark")
    spec, groups, _ = prepare(parsed, registry, "benchmark")
    started = time.perf_counter()
    finished = SweepRun(parsed, spec, groups, registry, manager.hook, ResultStore(outputs, "sweep"),
                        torch.device("cpu"), executor=executor, say=lambda line: None).run()
    elapsed = time.perf_counter() - started
    assert finished and len(ResultStore(outputs, "sweep").summaries()) == 4
    return elapsed


def timed_run(cells, registry, manager, executor, outputs: Path) -> float:
    started = time.perf_counter()
    outcome = run_cells(cells, registry=registry, hooks=manager.hook, store=ResultStore(outputs, "executors"),
                        device=torch.device("cpu"), force=True, executor=executor, say=lambda line: None)
    elapsed = time.perf_counter() - started
    assert len(outcome.finished) == len(cells), outcome
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps per cell")
    parser.add_argument("--no-ray", action="store_true")
    parser.add_argument("--write", help="also write the markdown result to this file")
    parser.add_argument("--sweep", action="store_true", help="time a 4-trial random sweep instead")
    parser.add_argument("--batch", type=int, default=2, help="the sweep's [sweep] batch (--sweep)")
    args = parser.parse_args()

    torch.set_num_threads(1)
    manager = plugin_manager()
    manager.unregister(name="console")
    registry = build_registry(manager)
    if args.sweep:
        return sweep_main(args, registry, manager)
    cells = resolve_cells(parse_matrix(matrix(args.steps), default_name="executors", where="benchmark"), registry)
    executors = {"jobs 1": LocalExecutor(1), "jobs 2": LocalExecutor(2)}
    ray_start = None
    if not args.no_ray:
        import ray

        from bench.executors.ray import RayExecutor
        started = time.perf_counter()
        ray.init(num_cpus=cpu_cores(), include_dashboard=False, configure_logging=False, log_to_driver=False)
        ray_start = time.perf_counter() - started
        executors["ray"] = RayExecutor(jobs=1, num_cpus=1)
        timed_run(cells[:1], registry, manager, executors["ray"], Path(tempfile.mkdtemp()))  # warm a worker

    times: dict[str, list[float]] = {name: [] for name in executors}
    load, capacity = [], []
    if "ray" in executors:
        executors["ray"].overheads.clear()  # the warm-up cell's includes the worker's start
    for round_ in range(args.rounds):
        capacity.append(cores_available())
        order = list(executors) if round_ % 2 == 0 else list(reversed(executors))
        for name in order:
            with tempfile.TemporaryDirectory() as outputs:
                times[name].append(timed_run(cells, registry, manager, executors[name], Path(outputs)))
            load.append(os.getloadavg()[0])
            print(f"round {round_ + 1} {name}: {times[name][-1]:.2f} s", file=sys.stderr)
    overheads = executors["ray"].overheads if "ray" in executors else []
    text = report(times, len(cells), args, ray_start, load, capacity, overheads)
    print(text)
    if args.write:
        Path(args.write).write_text(text)


def sweep_main(args: argparse.Namespace, registry, manager) -> None:
    executors = {"jobs 1": LocalExecutor(1), "jobs 2": LocalExecutor(2)}
    times: dict[str, list[float]] = {name: [] for name in executors}
    load, capacity = [], []
    for round_ in range(args.rounds):
        capacity.append(cores_available())
        for name in (executors if round_ % 2 == 0 else reversed(list(executors))):
            with tempfile.TemporaryDirectory() as outputs:
                elapsed = timed_sweep(args.steps, args.batch, registry, manager, executors[name], Path(outputs))
            times[name].append(elapsed)
            load.append(os.getloadavg()[0])
            print(f"round {round_ + 1} sweep {name}: {times[name][-1]:.2f} s", file=sys.stderr)
    median = {name: statistics.median(values) for name, values in times.items()}
    rows = [f"| {name} | {', '.join(f'{v:.1f} s' for v in values)} | {median[name]:.1f} s |"
            for name, values in times.items()]
    text = "\n".join([
        f"`python benchmarks/executors.py --sweep --batch {args.batch} --rounds {args.rounds} --steps {args.steps}`, "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, {cpu_cores()} CPU cores, torch "
        f"{torch.__version__}; load average {min(load):.1f}-{max(load):.1f}; cores free before each round "
        f"{', '.join(f'{c:.2f}' for c in capacity)}.", "",
        f"Random sweep over lr, 4 trials of {args.steps} steps (the cells above, AdamW), `batch = {args.batch}`: "
        f"{-(-4 // args.batch)} round(s) of the sweep, the pool's workers started once per sweep; rounds of the "
        "benchmark alternate the order.", "",
        "| sweep | wall time per sweep (each round) | median |", "|---|---|---|", *rows, "",
        f"- Speed-up of `--jobs 2` over `--jobs 1` (ratio of medians): "
        f"**{median['jobs 1'] / median['jobs 2']:.2f}x**."]) + "\n"
    print(text)
    if args.write:
        Path(args.write).write_text(text)


def report(times: dict[str, list[float]], cells: int, args: argparse.Namespace, ray_start: float | None,
           load: list[float], capacity: list[float], overheads: list[float]) -> str:
    median = {name: statistics.median(values) for name, values in times.items()}
    lines = [
        "# Executors: --jobs 2 speed-up and Ray's per-cell overhead", "",
        f"`python benchmarks/executors.py --rounds {args.rounds} --steps {args.steps}`, "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, {cpu_cores()} CPU cores, "
        f"torch {torch.__version__}, Python {platform.python_version()}; load average during the run "
        f"{min(load):.1f}-{max(load):.1f} (a shared machine).", "",
        f"{cells} cells (gpt1, 2 layers, n_embd 64, batch 16 x 64 tokens, {args.steps} AdamW/Adam/SGD/momentum "
        "steps each, no checkpoints, one torch thread per cell), each run from scratch; rounds alternate the order.",
        "", "| executor | wall time per run (each round) | median |", "|---|---|---|",
    ]
    for name, values in times.items():
        lines.append(f"| {name} | {', '.join(f'{v:.1f} s' for v in values)} | {median[name]:.1f} s |")
    lines += ["", f"- Cores the machine gave, measured before each round (2.0 = both cores free): "
                  f"{', '.join(f'{c:.2f}' for c in capacity)}.",
              f"- Speed-up of `--jobs 2` over `--jobs 1` (ratio of medians): "
              f"**{median['jobs 1'] / median['jobs 2']:.2f}x**."]
    if "ray" in median:
        lines.append(f"- Ray's overhead per cell, one task in flight: from wall times ((median ray - median jobs 1) "
                     f"/ {cells}) {(median['ray'] - median['jobs 1']) / cells:.2f} s; measured per cell (round trip "
                     f"minus the task's own run, {len(overheads)} cells): median **{statistics.median(overheads):.2f} "
                     f"s per cell** (range {min(overheads):.2f}-{max(overheads):.2f} s). Starting the local cluster "
                     f"took {ray_start:.1f} s once.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
