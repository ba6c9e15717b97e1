"""Wall-time share of checkpoints at ``checkpoint_every = 10`` on a small cell.

Each measurement is ``bench run`` of a one-cell matrix in a fresh Python process (one torch
thread, so a background writer has the other core when one is free). Sides, run in interleaved
rounds (none, before, sync, async, none, ...; the order rotates each round), figures are medians
over rounds:

* ``none``: ``checkpoint = false``: no checkpoint is ever written.
* ``before``: ``checkpoint_every = 10`` with bench as it was before this work (``--before``, a git
  revision extracted with ``git archive``; see benchmarks/memory.py): three fsyncs and a second
  read of the file for its SHA-256 per save.
* ``sync``: ``checkpoint_every = 10`` with this tree (SHA-256 while writing).
* ``async``: the same with ``checkpoint_async = true`` (CPU copy, background writer).

Wall time of a run is its training loop without evaluation: the summary's ``train_time_s``
(which a slower step right after a save, or a background writer competing for the CPU, makes
longer) plus ``checkpoint_time_s`` (time the loop spent in saves, waiting for the previous
background write included). The checkpoint share of a side is ``1 - wall(none) / wall(side)``,
from the medians; per save it is ``(wall(side) - wall(none)) / saves``.

Cell: gpt1, 2 layers x 128, 4 heads, Adam, batch 16 x 64 tokens, synthetic data (vocabulary 64),
200 steps in one epoch, so 20 saves; its checkpoint is about 5 MB (weights and Adam's two moments).

    python benchmarks/checkpoint_cost.py --rounds 5 --write benchmarks/results/checkpoint_cost.md

Goal: async (and if possible sync) <= 5 % of wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from memory import extract  # noqa: E402 - the benchmarks folder is not a package
from one_cell import trained_cell  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BEFORE = "d6f0bb8"  # main before issue 11's checkpoint work
STEPS, EVERY = 200, 10
CELL = {"model": "gpt1", "optimizer": "adam", "lr": 1e-3, "n_layer": 2, "n_embd": 128, "n_head": 4,
        "n_positions": 64, "batch_size": 16, "seq_len": 64, "dataset": "synthetic", "valid_tokens": 4097,
        "test_tokens": 4097, "max_steps": STEPS, "steps_per_epoch": STEPS, "log_every": 50}
SIDES = {"none": {"checkpoint": False}, "before": {"checkpoint_every": EVERY},
         "sync": {"checkpoint_every": EVERY}, "async": {"checkpoint_every": EVERY, "checkpoint_async": True}}


def child(side: str, halt: int) -> dict:
    """``bench run`` of the cell in this process; the summary's times, and the checkpoint's size
    when ``halt`` keeps it on disk (a paused cell keeps its checkpoints)."""
    settings = {**CELL, **SIDES[side], **({"halt_at_step": halt} if halt else {})}
    with trained_cell("ckpt", settings) as cell:
        if halt:
            return {"checkpoint_bytes": max(p.stat().st_size for p in cell.glob("checkpoints/*.pt"))}
        summary = json.loads((cell / "summary.json").read_text())
    return {"train_s": summary["train_time_s"], "save_s": summary["checkpoint_time_s"]}


def run_side(side: str, before: dict[str, str] | None, halt: int = 0) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **(before if side == "before" else {})}
    args = [sys.executable, str(Path(__file__).resolve()), "--child", side, "--halt", str(halt)]
    done = subprocess.run(args, env=env, capture_output=True, text=True, cwd=tempfile.gettempdir())
    if done.returncode != 0:
        raise SystemExit(f"{side} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def machine() -> str:
    """CPU model and core count (lscpu), and the load average when the run started and ended."""
    fields = dict(line.split(":", 1) for line in subprocess.run(["lscpu"], capture_output=True, text=True)
                  .stdout.splitlines() if ":" in line)
    return f"{fields.get('Model name', platform.processor()).strip()}, {os.cpu_count()} cores"


def load_average() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def table(results: dict[str, list[dict]]) -> list[str]:
    wall = {side: statistics.median(r["train_s"] + r["save_s"] for r in runs) for side, runs in results.items()}
    saves = STEPS // EVERY
    lines = ["| side | wall s (median) | train s | checkpoint s | checkpoint share of wall | ms per save | "
             "wall / none | share, paired by round (median) |", "|---|---|---|---|---|---|---|---|"]
    for side, runs in results.items():
        train = statistics.median(r["train_s"] for r in runs)
        save = statistics.median(r["save_s"] for r in runs)
        share = 1 - wall["none"] / wall[side]
        per_save = (wall[side] - wall["none"]) / saves * 1e3
        # Each round's side against the same round's none: load drifting between rounds cancels.
        paired = statistics.median(1 - (n["train_s"] + n["save_s"]) / (r["train_s"] + r["save_s"])
                                   for n, r in zip(results["none"], runs))
        figures = "- | - | 1.000 | -" if side == "none" else (
            f"{share:.1%} | {per_save:.1f} | {wall[side] / wall['none']:.3f} | {paired:.1%}")
        lines.append(f"| {side} | {wall[side]:.3f} | {train:.3f} | {save:.3f} | {figures} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--before", default=BEFORE, help="git revision measured as 'before'")
    parser.add_argument("--sides", nargs="+", default=list(SIDES), choices=list(SIDES))
    parser.add_argument("--write", type=Path, help="also write the results (markdown) here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--halt", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.halt)))
        return
    sides = ["none"] + [s for s in args.sides if s != "none"]
    started, load_before = datetime.now(UTC), load_average()
    with tempfile.TemporaryDirectory() as folder:
        before = extract(args.before, Path(folder)) if "before" in sides else None
        if before is None and "before" in sides:
            sides.remove("before")
        size = run_side("sync", before, halt=EVERY)["checkpoint_bytes"]
        results: dict[str, list[dict]] = {side: [] for side in sides}
        for round_ in range(args.rounds):
            for side in sides[round_ % len(sides):] + sides[:round_ % len(sides)]:
                results[side].append(run_side(side, before))
                print(f"round {round_ + 1} {side}: {results[side][-1]}", file=sys.stderr)
    lines = [f"{started:%Y-%m-%d %H:%M} UTC; {machine()} (shared VM); load average (1/5/15 min) "
             f"{load_before} at the start, {load_average()} at the end; 1 torch thread per run; {args.rounds} "
             f"interleaved rounds, medians; before = {args.before}; checkpoint {size / 1e6:.2f} MB, "
             f"{STEPS // EVERY} saves in {STEPS} steps.", "", *table(results)]
    print("\n".join(lines))
    if args.write:
        args.write.parent.mkdir(parents=True, exist_ok=True)
        args.write.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
