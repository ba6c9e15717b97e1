"""Peak memory of one cell: bench's trainer vs a bare training loop, full vs chunked loss.

Every measurement is a fresh Python process (peak RSS, ``ru_maxrss``, only ever grows, so one
process per figure), one torch thread. Sides, run in interleaved rounds (bare, today, harness,
chunked, bare, ...), figures are medians over rounds:

* ``bare``: the same model, optimizer and data (bench's plugins and data loading), trained by a
  plain loop: forward, cross-entropy, backward, step, each step in a function so its tensors die
  with it; then the validation and test splits under ``torch.no_grad``. Nothing else.
* ``today``: ``bench run`` of the cell with bench as it was before this work (``--today``, a git
  revision, extracted with ``git archive`` into a temporary folder; skipped without git).
* ``harness``: ``bench run`` of the cell with this tree, ``loss_chunk = 0`` (full logits).
* ``chunked``: the same with ``loss_chunk = --chunk`` positions.

Step time is the median of the 10 steps 10..19 (bench's ``step_times_10_19_s``; the bare loop
times the same steps the same way), so each run trains 20 steps, then evaluates.

Cells (model, optimizer, batch, seq_len and vocabulary set the step's tensors, and so the peak):

* ``hw3-gpt1``: hw3's gpt1 cell (1 layer x 256, 4 heads, Adam, batch 16, seq 128, GPT-2
  vocabulary 50,257) on ``random-tokens`` with k = 50,257, whose validation and test splits are
  2 evaluation batches each (WikiText-2's would take minutes per run and leave the peak alone).
* ``small``: quickstart's gpt1 cell (1 x 64, Adam, batch 16, seq 32, vocabulary 64, synthetic).

    python benchmarks/memory.py --rounds 3 --write benchmarks/results/memory.md

Goals: harness peak <= 1.05x bare; chunked peak <= 0.6x today's at equal step time (+-3 %).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from one_cell import trained_cell

ROOT = Path(__file__).resolve().parents[1]
TODAY = "970de96"  # main before issue 11's memory work
STEPS = 20
CELLS = {
    "hw3-gpt1": {"model": "gpt1", "optimizer": "adam", "lr": 1e-3, "n_layer": 1, "n_embd": 256, "n_head": 4,
                 "n_positions": 512, "batch_size": 16, "seq_len": 128, "dataset": "random-tokens",
                 "k": 50257, "vocab_size": 50257, "train_tokens": 40 * 2048 + 1,
                 "valid_tokens": 2 * 2048 + 1, "test_tokens": 2 * 2048 + 1},
    "small": {"model": "gpt1", "optimizer": "adam", "lr": 3e-3, "n_layer": 1, "n_embd": 64, "n_head": 4,
              "n_positions": 64, "batch_size": 16, "seq_len": 32, "dataset": "synthetic"},
}
SIDES = ("bare", "today", "harness", "chunked")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# -- child processes -------------------------------------------------------------------------

def child_bench_run(cell: str, loss_chunk: int | None) -> dict:
    """``bench run`` of a one-cell matrix, in this process; returns peak RSS and step times."""
    imported = peak_rss_mib()
    settings = {**CELLS[cell], "max_steps": STEPS, "steps_per_epoch": STEPS, "log_every": 10}
    if loss_chunk is not None:
        settings["loss_chunk"] = loss_chunk
    with trained_cell("mem", settings) as cell:
        summary = json.loads((cell / "summary.json").read_text())
    # The summary's OS peak is read when training ends (before the test evaluation and the closing
    # table, whose pandas import adds ~60 MiB to a small cell's process peak).
    train_peak = summary["memory"]["rss_peak_bytes"] / 2**20
    return {"peak_mib": peak_rss_mib(), "train_peak_mib": train_peak, "imported_mib": imported,
            "steps_s": summary["step_times_10_19_s"]}


def child_bare(cell: str) -> dict:
    """The plain loop: same model, optimizer and data as the cell, nothing else."""
    import torch
    import torch.nn.functional as F

    from bench.cells import resolve_config
    from bench.data.loading import load_cell_data
    from bench.data.samplers import RandomBatchSampler, evaluation_batches
    from bench.registry import build_registry, plugin_manager

    imported = peak_rss_mib()
    registry = build_registry(plugin_manager())
    config = resolve_config(dict(CELLS[cell]), registry, "bare")
    torch.manual_seed(0)
    data = load_cell_data(config, registry, torch.device("cpu"))
    component = registry.get("model", config["model"])
    model = component.factory(data.vocab_size, **{k: config[k] for k in component.defaults})
    optimizer = torch.optim.Adam(model.parameters(), lr=config["lr"])
    sampler = RandomBatchSampler(data.splits["train"], config["batch_size"], config["seq_len"], seed=0)

    def step() -> None:
        x, y = sampler.next_batch()
        logits = model(x)
        F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1)).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    @torch.no_grad()
    def nll(x: torch.Tensor, y: torch.Tensor) -> float:
        logits = model(x)
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1), reduction="sum").item()

    times = []
    for i in range(STEPS):
        started = time.perf_counter()
        step()
        if 10 <= i <= 19:
            times.append(time.perf_counter() - started)
    train_peak = peak_rss_mib()
    model.eval()
    for split in ("valid", "test"):
        sum(nll(x, y) for x, y in evaluation_batches(data.splits[split], config["seq_len"], config["batch_size"]))
    return {"peak_mib": peak_rss_mib(), "train_peak_mib": train_peak, "imported_mib": imported, "steps_s": times}


# -- parent ----------------------------------------------------------------------------------

def extract(revision: str, folder: Path) -> dict[str, str] | None:
    """``revision``'s tree in ``folder``, importable as ``bench`` and ``bench_plugins``."""
    try:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision], check=True, capture_output=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"skipping 'today': cannot extract {revision} ({exc})", file=sys.stderr)
        return None
    tree, shim = folder / "tree", folder / "shim"
    tree.mkdir(parents=True)
    shim.mkdir()
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    (shim / "bench_plugins").symlink_to(tree / "plugins")
    write_entry_points(tree / "pyproject.toml", shim)
    return {"PYTHONPATH": f"{tree}{os.pathsep}{shim}"}


def write_entry_points(pyproject: Path, shim: Path) -> None:
    """Distribution metadata naming the revision's own plugins: bench finds its built-in plugins
    through entry points, and the installed ones may name modules this revision lacks. Found on
    PYTHONPATH before site-packages, so it shadows the installed distribution's."""
    import tomllib

    project = tomllib.loads(pyproject.read_text())["project"]
    info = shim / f"bench-{project['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: bench\nVersion: {project['version']}\n")
    lines = [f"{name} = {target}" for name, target in project["entry-points"]["bench.plugins"].items()]
    (info / "entry_points.txt").write_text("[bench.plugins]\n" + "\n".join(lines) + "\n")


def run_side(side: str, cell: str, chunk: int, trees: dict[str, dict[str, str] | None]) -> dict | None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    tree = trees.get("today" if side == "today" else "harness")
    if side == "today" and tree is None:
        return None
    env.update(tree or {})
    args = [sys.executable, str(Path(__file__).resolve()), "--child", side, "--cell", cell, "--chunk", str(chunk)]
    done = subprocess.run(args, env=env, capture_output=True, text=True, cwd=tempfile.gettempdir())
    if done.returncode != 0:
        raise SystemExit(f"{side} on {cell} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cells", nargs="+", default=list(CELLS), choices=list(CELLS))
    parser.add_argument("--sides", nargs="+", default=list(SIDES), choices=list(SIDES))
    parser.add_argument("--chunk", type=int, default=512, help="loss_chunk of the chunked side (positions)")
    parser.add_argument("--today", default=TODAY, help="git revision measured as 'today'")
    parser.add_argument("--harness", help="git revision for the harness and chunked sides (default: this working "
                                          "tree, which must then stay unchanged while the benchmark runs)")
    parser.add_argument("--write", type=Path)
    parser.add_argument("--child", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--cell", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        import torch

        torch.set_num_threads(1)
        result = child_bare(args.cell) if args.child == "bare" else child_bench_run(
            args.cell, args.chunk if args.child == "chunked" else (0 if args.child == "harness" else None))
        print(json.dumps(result))
        return
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as folder:
        trees = {"today": extract(args.today, Path(folder, "today")) if "today" in args.sides else None,
                 "harness": extract(args.harness, Path(folder, "harness")) if args.harness else None}
        runs = {(cell, side): [] for cell in args.cells for side in args.sides}
        for round_ in range(args.rounds):
            for cell in args.cells:
                for side in args.sides:
                    result = run_side(side, cell, args.chunk, trees)
                    if result is not None:
                        runs[cell, side].append(result)
                        print(f"round {round_ + 1} {cell} {side}: peak {result['peak_mib']:.0f} MiB, training "
                              f"{result['train_peak_mib']:.0f} MiB, step "
                              f"{statistics.median(result['steps_s']) * 1e3:.0f} ms", file=sys.stderr, flush=True)
    text = report(runs, args)
    print(text)
    if args.write:
        args.write.write_text(text)


def report(runs: dict[tuple[str, str], list[dict]], args: argparse.Namespace) -> str:
    lines = [f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, {os.cpu_count()} cores "
             f"(shared), 1 torch thread per run; {args.rounds} interleaved rounds, medians; today = {args.today}; "
             f"harness = {args.harness or 'working tree'}; "
             f"chunked = loss_chunk {args.chunk}.", "",
             "process peak: ru_maxrss at exit; training peak: ru_maxrss when training ended (bench: the summary's "
             "`memory.rss_peak_bytes`; bare: after its 20 steps).", "",
             "| cell | side | process peak MiB | training peak MiB | after imports MiB | step ms | "
             "process peak / bare | training peak / bare | process peak / today | step / today | step / bare |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    keys = ("peak_mib", "train_peak_mib", "imported_mib")
    for cell in args.cells:
        medians = {}
        for side in args.sides:
            if runs[cell, side]:
                medians[side] = {key: statistics.median(r[key] for r in runs[cell, side]) for key in keys}
                medians[side]["step_s"] = statistics.median(statistics.median(r["steps_s"]) for r in runs[cell, side])
        for side, m in medians.items():
            def ratio(key: str, other: str, m: dict = m, medians: dict = medians) -> str:
                return f"{m[key] / medians[other][key]:.3f}" if other in medians else "-"
            lines.append(f"| {cell} | {side} | {m['peak_mib']:.0f} | {m['train_peak_mib']:.0f} | "
                         f"{m['imported_mib']:.0f} | "
                         f"{m['step_s'] * 1e3:.0f} | {ratio('peak_mib', 'bare')} | {ratio('train_peak_mib', 'bare')} | "
                         f"{ratio('peak_mib', 'today')} | {ratio('step_s', 'today')} | {ratio('step_s', 'bare')} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
