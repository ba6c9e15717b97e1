"""Startup time of the `bench` command next to the cost of `import torch` alone.

Times three fresh interpreters in interleaved rounds, so drifts in machine load hit every
command alike, and reports medians:

- ``python -c "import torch"``: the floor no torch-based command can go under;
- ``python -c "import torch, torch._dynamo"``: the floor of a command that builds an optimizer;
- ``bench list`` (goal: at most import torch + 0.3 s);
- ``bench run matrices/hw3.toml --dry-run`` (goal: under 2 s).

After the rounds it runs each bench command once more in-process and lists which heavy
optional modules it imported (pandas, matplotlib, torch._dynamo), the cause of most of the
startup time before this benchmark existed.

    python benchmarks/startup.py                              # this checkout
    python benchmarks/startup.py --before /tmp/old-checkout   # and another, in the same rounds
    python benchmarks/startup.py --rounds 9 --write benchmarks/results/startup.md

A checkout given with --before supplies the ``bench`` package; the built-in plugins
(``bench_plugins``) are whatever is installed.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("pandas", "matplotlib", "torch._dynamo", "scipy", "lm_eval")
COMMANDS = {
    "import torch": ["-c", "import torch"],
    # The floor of anything that constructs a torch optimizer, as resolving a matrix does to check
    # its hyperparameters: Optimizer.add_param_group is wrapped by torch._disable_dynamo, whose
    # first call imports torch._dynamo.
    "import torch, torch._dynamo": ["-c", "import torch, torch._dynamo"],
    "bench list": ["-m", "bench.cli", "list"],
    "hw3 --dry-run": ["-m", "bench.cli", "run", "matrices/hw3.toml", "--dry-run"],
}
PROBE = ("import sys, contextlib, io\nfrom bench.cli import main\n"
         "with contextlib.redirect_stdout(io.StringIO()): main(sys.argv[1:])\n"
         "print(','.join(m for m in {heavy!r} if m in sys.modules) or 'none')\n")


def _env(tree: Path) -> dict[str, str]:
    # The checkout under test comes first on sys.path, ahead of any installed (editable) bench.
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), os.environ.get("PYTHONPATH", "")])}


def time_once(args: list[str], tree: Path) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, *args], cwd=tree, env=_env(tree), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def heavy_modules(args: list[str], tree: Path) -> str:
    cli_args = args[2:]  # drop "-m bench.cli"
    done = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY), *cli_args], cwd=tree, env=_env(tree),
                          check=True, capture_output=True, text=True)
    return done.stdout.strip().splitlines()[-1]


def measure(trees: dict[str, Path], rounds: int) -> dict[tuple[str, str], list[float]]:
    """Wall times per (checkout, command); every round runs every command of every checkout."""
    floors = [name for name in COMMANDS if name.startswith("import")]
    runs = [("-", name) for name in floors] + [(label, name) for label in trees for name in COMMANDS
                                               if name not in floors]
    tree_of = {"-": next(iter(trees.values())), **trees}
    times: dict[tuple[str, str], list[float]] = {run: [] for run in runs}
    for label, name in runs:  # warm the file cache and the bytecode caches first
        time_once(COMMANDS[name], tree_of[label])
    for _ in range(rounds):
        for label, name in runs:
            times[(label, name)].append(time_once(COMMANDS[name], tree_of[label]))
    return times


def report(trees: dict[str, Path], times: dict[tuple[str, str], list[float]]) -> str:
    torch_s = statistics.median(times[("-", "import torch")])
    rounds = len(times[("-", "import torch")])
    lines = [f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
             f"- machine: {platform.node()} ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
             f"load average {os.getloadavg()[0]:.2f} at the end), Python {platform.python_version()}",
             f"- {rounds} interleaved rounds; wall time of a fresh interpreter; checkouts: "
             + ", ".join(f"{label} = {path}" for label, path in trees.items()),
             "",
             "| checkout | command | median s | min s | minus import torch s | / import torch "
             "| heavy modules imported |",
             "|---|---|---|---|---|---|---|"]
    for (label, name), samples in times.items():
        median = statistics.median(samples)
        heavy = "-" if label == "-" else heavy_modules(COMMANDS[name], trees[label])
        lines.append(f"| {label} | {name} | {median:.2f} | {min(samples):.2f} | {median - torch_s:+.2f} | "
                     f"{median / torch_s:.2f} | {heavy} |")
    for name in COMMANDS:
        if not name.startswith("import") and len(trees) == 2:
            (a, _), (b, _) = trees.items()
            ratio = statistics.median(times[(b, name)]) / statistics.median(times[(a, name)])
            lines.append(f"\n{name}: {b} / {a} = {ratio:.2f} (ratio of medians)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, help="another checkout of bench (e.g. before a change) timed in the "
                                                     "same rounds, for a ratio")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--write", type=Path, help="also append the markdown table to this file")
    args = parser.parse_args()
    trees = {"before": args.before.resolve()} if args.before else {}
    trees["this"] = REPO
    text = report(trees, measure(trees, args.rounds))
    print(text)
    if args.write:
        with args.write.open("a", encoding="utf-8") as handle:
            handle.write(text + "\n\n")


if __name__ == "__main__":
    main()
