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

    python benchmarks/startup.py                        # this checkout
    python benchmarks/startup.py --before 970de96       # and a git revision of it, in the same rounds
    python benchmarks/startup.py --rounds 9 --write benchmarks/results/startup.md

The revision given with --before is exported (git archive) to a temporary folder that comes first
on PYTHONPATH, with its own built-in plugins and entry points, so it runs as it was committed.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
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


def export_revision(revision: str) -> Path:
    """The files of ``revision`` in a temporary folder, importable as an installed bench would be."""
    root = Path(tempfile.mkdtemp(prefix=f"bench-startup-{revision}-"))
    archive = subprocess.run(["git", "-C", str(REPO), "archive", revision], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(root, filter="data")
    (root / "bench_plugins").symlink_to("plugins")  # how pyproject installs the built-in plugins
    # Metadata under the installed distribution's name shadows it (PYTHONPATH comes first), so the
    # revision's own entry points are the ones loaded.
    installed = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["name"]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    info = root / f"{installed}.egg-info"
    info.mkdir()
    (info / "PKG-INFO").write_text(f"Metadata-Version: 2.1\nName: {installed}\nVersion: {project['version']}\n")
    groups = project.get("entry-points", {})
    (info / "entry_points.txt").write_text("".join(
        f"[{group}]\n" + "".join(f"{name} = {target}\n" for name, target in points.items()) + "\n"
        for group, points in groups.items()))
    return root


def time_once(args: list[str], tree: Path) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of one fresh interpreter running ``args``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run([sys.executable, *args], cwd=tree, env=_env(tree), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def heavy_modules(args: list[str], tree: Path) -> str:
    cli_args = args[2:]  # drop "-m bench.cli"
    done = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY), *cli_args], cwd=tree, env=_env(tree),
                          check=True, capture_output=True, text=True)
    return done.stdout.strip().splitlines()[-1]


Samples = dict[tuple[str, str], list[tuple[float, float]]]


def measure(trees: dict[str, Path], rounds: int) -> Samples:
    """(wall, CPU) seconds per (checkout, command); every round runs every command of every checkout."""
    floors = [name for name in COMMANDS if name.startswith("import")]
    runs = [("-", name) for name in floors] + [(label, name) for label in trees for name in COMMANDS
                                               if name not in floors]
    tree_of = {"-": next(iter(trees.values())), **trees}
    samples: Samples = {run: [] for run in runs}
    for label, name in runs:  # warm the file cache and the bytecode caches first
        time_once(COMMANDS[name], tree_of[label])
    for _ in range(rounds):
        for label, name in runs:
            samples[(label, name)].append(time_once(COMMANDS[name], tree_of[label]))
    return samples


def report(trees: dict[str, Path], samples: Samples) -> str:
    def median(run: tuple[str, str], which: int) -> float:
        return statistics.median(sample[which] for sample in samples[run])

    torch_run = ("-", "import torch")
    lines = [f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
             f"- machine: {platform.node()} ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
             f"load average {os.getloadavg()[0]:.2f} at the end), Python {platform.python_version()}",
             f"- {len(samples[torch_run])} interleaved rounds of fresh interpreters; medians of wall time and of "
             "CPU time (user + system, less disturbed by other load); checkouts: "
             + ", ".join(trees) + " (a revision exported with git archive; 'this': the working tree)",
             "",
             "| checkout | command | wall s | wall - import torch s | CPU s | CPU - import torch s "
             "| CPU / import torch | heavy modules imported |",
             "|---|---|---|---|---|---|---|---|"]
    for run in samples:
        label, name = run
        heavy = "-" if label == "-" else heavy_modules(COMMANDS[name], trees[label])
        wall, cpu = median(run, 0), median(run, 1)
        lines.append(f"| {label} | {name} | {wall:.2f} | {wall - median(torch_run, 0):+.2f} | {cpu:.2f} | "
                     f"{cpu - median(torch_run, 1):+.2f} | {cpu / median(torch_run, 1):.2f} | {heavy} |")
    if len(trees) == 2:
        (a, _), (b, _) = trees.items()
        for name in COMMANDS:
            if not name.startswith("import"):
                ratios = [median((b, name), i) / median((a, name), i) for i in (0, 1)]
                lines.append(f"\n{name}: {b} / {a} = {ratios[0]:.2f} wall, {ratios[1]:.2f} CPU (ratios of medians)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", metavar="REV", help="a git revision of this repository (e.g. before a change) "
                                                        "timed in the same rounds, for a ratio")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--write", type=Path, help="also append the markdown table to this file")
    args = parser.parse_args()
    trees = {f"before ({args.before})": export_revision(args.before)} if args.before else {}
    trees["this"] = REPO
    text = report(trees, measure(trees, args.rounds))
    print(text)
    if args.write:
        with args.write.open("a", encoding="utf-8") as handle:
            handle.write(text + "\n\n")


if __name__ == "__main__":
    main()
