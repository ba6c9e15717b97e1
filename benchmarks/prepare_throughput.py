"""`bench data prepare` against a bare tiktoken + multiprocessing pipeline: tokens/s and peak memory.

Usage (needs the shared data folder and tiktoken's GPT-2 files):

    BENCH_DATA_DIR=... TIKTOKEN_CACHE_DIR=... python benchmarks/prepare_throughput.py \\
        --mb 500 --small-mb 100 --workers 2 --repeats 2

The input is text made by concatenating WikiText-2's train.txt and tiny Shakespeare's input.txt
(from ``$BENCH_DATA_DIR``) into files of ~12 MB each until ``--mb`` megabytes, written to a temp
folder that is deleted at the end. Both sides get the same files and the same worker count:

* bench: ``bench data prepare FOLDER --out OUT --workers N --no-progress`` (each file a document,
  streamed; GPT-2 via tiktoken's ``encode_ordinary_batch``; 100M-token shards with SHA-256 and a
  manifest), run as its own process, startup (plugin loading, ~1-4 s) included;
* bare: a script in the style of llm.c's ``fineweb.py``: the main process reads each file in
  ~2 MB runs of lines, ``multiprocessing.Pool(N).imap`` hands each run to a worker that joins it
  into 8 pieces, calls ``encode_ordinary_batch`` on them and returns a uint16 array, and the main
  process appends the arrays to one ``.bin`` file. No EOT, no shards, no checksums, no resume.

tokens/s is given two ways: tokens written / wall seconds of the whole process ("wall": bench's
startup, which imports torch with its plugins, included) and tokens / seconds from the worker pool's
start to the last write ("pipeline": bench reports it on its last line, the bare script prints it).
Peak memory is the largest sum, over
the process and its children, of the proportional set size (``Pss`` in ``/proc/PID/smaps_rollup``,
so pages forked workers share with their parent count once), sampled every 0.2 s; the page cache
is not included. The two sides run interleaved (bench, bare, bench, bare, ...) so load drifts hit
both; the table gives medians and the ratio of medians. Prints a markdown report to stdout.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

BARE = textwrap.dedent('''
    import multiprocessing, sys, time
    import numpy as np, tiktoken

    enc = tiktoken.get_encoding("gpt2")

    def work(lines):
        # ~2 MB of lines as 8 joined pieces: one encode_ordinary_batch call over tiktoken's 8 threads.
        # (Handing it the single lines instead costs a thread-pool task per line: ~0.55x as fast here.)
        step = max(1, -(-len(lines) // 8))
        pieces = ["".join(lines[i:i + step]) for i in range(0, len(lines), step)]
        return np.concatenate([np.array(ids, dtype=np.uint16) for ids in enc.encode_ordinary_batch(pieces)])

    def runs(files):
        for name in files:
            with open(name, encoding="utf-8", newline="") as handle:
                while lines := handle.readlines(1 << 21):
                    yield lines

    if __name__ == "__main__":
        out, workers, files = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
        total, started = 0, time.perf_counter()
        with multiprocessing.Pool(workers) as pool, open(out, "wb") as sink:
            for ids in pool.imap(work, runs(files)):
                sink.write(ids.tobytes())
                total += len(ids)
        print(total, time.perf_counter() - started)
''')


def make_input(folder: Path, megabytes: int, data_dir: Path) -> list[Path]:
    parts = [data_dir / "wikitext-2" / "train.txt", data_dir / "tinyshakespeare" / "input.txt"]
    block = b"".join(p.read_bytes() for p in parts)
    folder.mkdir(parents=True)
    files, written = [], 0
    while written < megabytes * 10**6:
        path = folder / f"part_{len(files):04d}.txt"
        path.write_bytes(block)
        files.append(path)
        written += len(block)
    return files


def tree_pss_kib(pid: int) -> int:
    """Sum of Pss over ``pid`` and its descendants (KiB)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        todo += children.get(current, [])
        try:
            with open(f"/proc/{current}/smaps_rollup") as handle:
                for line in handle:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total


def measure(command: list[str], env: dict[str, str]) -> tuple[float, int, str, str]:
    """Wall seconds, peak tree PSS in MiB, stdout, stderr."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    while process.poll() is None:
        peak = max(peak, tree_pss_kib(process.pid))
        time.sleep(0.2)
    wall = time.perf_counter() - started
    out, err = process.communicate()
    if process.returncode:
        raise SystemExit(f"{command[:4]} failed ({process.returncode}): {err[-2000:]}")
    return wall, peak // 1024, out, err


def bench_side(files_dir: Path, out: Path, workers: int, env: dict[str, str]) -> tuple[float, int, int, float]:
    """Wall seconds, peak PSS MiB, tokens, and the seconds bench itself reports tokenizing took."""
    shutil.rmtree(out, ignore_errors=True)
    wall, peak, _, err = measure([sys.executable, "-m", "bench.cli", "data", "prepare", str(files_dir), "--out",
                                  str(out), "--workers", str(workers), "--no-progress"], env)
    tokens = sum((p.stat().st_size - 1024) // 2 for p in out.glob("train_*.bin"))
    pipeline = float(err.rsplit(" tokens in ", 1)[1].split(" s ")[0])
    shutil.rmtree(out, ignore_errors=True)
    return wall, peak, tokens, pipeline


def bare_side(files: list[Path], out: Path, workers: int, script: Path, env: dict[str, str]
              ) -> tuple[float, int, int, float]:
    wall, peak, stdout, _ = measure([sys.executable, str(script), str(out), str(workers), *map(str, files)], env)
    out.unlink(missing_ok=True)
    tokens, pipeline = stdout.split()
    return wall, peak, int(tokens), float(pipeline)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=500, help="input size of the throughput runs (MB)")
    parser.add_argument("--small-mb", type=int, default=100, help="a second input size, for peak memory")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="interleaved runs per side at --mb")
    args = parser.parse_args()
    data_dir = Path(os.environ.get("BENCH_DATA_DIR", ""))
    env = {**os.environ, "BENCH_DISABLE_PLUGIN_AUTOLOAD": "1"}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-prepare-") as tmp:
        root = Path(tmp)
        script = root / "bare.py"
        script.write_text(BARE)
        rows: dict[tuple[str, int], list[tuple[float, int, int]]] = {}
        for megabytes, repeats in ((args.small_mb, 1), (args.mb, args.repeats)):
            files = make_input(root / f"in{megabytes}", megabytes, data_dir)
            size = sum(f.stat().st_size for f in files)
            for _ in range(repeats):
                rows.setdefault(("bench", size), []).append(bench_side(root / f"in{megabytes}", root / "out",
                                                                       args.workers, env))
                rows.setdefault(("bare", size), []).append(bare_side(files, root / "bare.bin", args.workers, script,
                                                                     env))
                print(f"# {size / 1e6:.0f} MB: bench {rows['bench', size][-1]}, bare {rows['bare', size][-1]}",
                      file=sys.stderr, flush=True)
            shutil.rmtree(root / f"in{megabytes}")
    load_after = os.getloadavg()
    print(report(rows, args, load_before, load_after))


def report(rows: dict, args: argparse.Namespace, load_before: tuple, load_after: tuple) -> str:
    lines = [
        f"# `bench data prepare` vs a bare tiktoken + multiprocessing pipeline ({datetime.now(UTC):%Y-%m-%d})",
        "",
        f"Machine: {platform.node()}, {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}; `--workers {args.workers}` on both sides. Load average "
        f"{load_before[0]:.1f} before and {load_after[0]:.1f} after (other jobs shared the CPUs: the figures are "
        f"noisy; the sides ran interleaved, and the ratio of medians is the number to read).",
        "",
        "| input | side | runs | tokens | wall s (median) | tokens/s, wall (median) | pipeline s (median) | "
        "tokens/s, pipeline (median) | peak PSS MiB (max) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    ratios = []
    for size in sorted({s for _, s in rows}):
        wall_rate, pipe_rate = {}, {}
        for side in ("bench", "bare"):
            runs = rows[side, size]
            wall_rate[side] = statistics.median(tokens / wall for wall, _, tokens, _ in runs)
            pipe_rate[side] = statistics.median(tokens / pipe for _, _, tokens, pipe in runs)
            lines.append(f"| {size / 1e6:.0f} MB | {side} | {len(runs)} | {runs[0][2]:,} | "
                         f"{statistics.median(r[0] for r in runs):.1f} | {wall_rate[side]:,.0f} | "
                         f"{statistics.median(r[3] for r in runs):.1f} | {pipe_rate[side]:,.0f} | "
                         f"{max(r[1] for r in runs)} |")
        ratios.append(f"{size / 1e6:.0f} MB: bench / bare tokens/s = {wall_rate['bench'] / wall_rate['bare']:.2f}x "
                      f"wall (process start to exit), {pipe_rate['bench'] / pipe_rate['bare']:.2f}x pipeline "
                      f"(worker pool start to last write)")
    lines += ["", *[f"- {r}" for r in ratios], ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
