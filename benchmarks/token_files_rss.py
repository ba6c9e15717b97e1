"""Peak memory of a short training run on the ``token-files`` dataset against corpus size.

For each corpus size (default 10M, 100M, 1B and 4B tokens) the script writes llm.c shards of
uint16 ids (100M tokens per shard, random ids below 50,257, plus one 1M-token validation shard)
into ``--dir``, then runs ``bench run`` on a small gpt1 cell reading them (``train`` a glob of the
shards) in a fresh process, twice:

* ``first``: an empty bench cache, so the id-range check scans every shard once (chunked);
* ``again``: the id ranges are remembered, so opening the corpus only ``stat``s the files.

How memory is measured: the parent samples ``/proc/<pid>/status`` of the run (and any child) every
10 ms and keeps the largest ``RssAnon`` (anonymous resident memory: the heap, tensors, Python
objects) plus ``RssShmem``. Pages of the memory-mapped shards are file-backed (``RssFile``): they
belong to the page cache, which the kernel can drop at any time, and are excluded on purpose. The
script also reports the kernel's ``VmHWM`` (peak of all resident memory, file-backed pages
included) at the last sample, and the largest ``RssFile`` seen, so what is excluded is visible.

Evaluation is bounded (``val_windows = test_windows = 64``) so a run takes seconds at every size;
the held-out cut is not used (a validation shard is given; test is held out from train's end).

    python benchmarks/token_files_rss.py --dir /big/disk/tmp --write benchmarks/results/token_files_rss.md

The shard files are deleted at the end (``--keep`` keeps them). Goal: peak anonymous memory grows by
at most 64 MB from 10M to 4B tokens.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

SHARD_TOKENS = 100_000_000
VOCAB = 50_257
SIZES = {"10M": 10_000_000, "100M": 100_000_000, "1B": 1_000_000_000, "4B": 4_000_000_000}

MATRIX = """
name = "rss"
[defaults]
dataset = "token-files"
train = "{train}"
valid = "{valid}"
vocab_size = {vocab}
model = "gpt1"
optimizer = "adamw"
n_layer = 2
n_embd = 128
n_head = 4
n_positions = 128
seq_len = 128
batch_size = 8
loss_chunk = 128
max_steps = 10
log_every = 5
val_windows = 64
test_windows = 64
"""


def write_shards(folder: Path, tokens: int) -> None:
    from bench_plugins.token_files import write_llmc_shard

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    block = rng.integers(0, VOCAB, SHARD_TOKENS, dtype=np.uint16)  # one random block, rolled per shard
    for index, start in enumerate(range(0, tokens, SHARD_TOKENS)):
        n = min(SHARD_TOKENS, tokens - start)
        write_llmc_shard(folder / f"train_{index:06d}.bin", np.roll(block, index * 7919)[:n])
    write_llmc_shard(folder / "val_000000.bin", rng.integers(0, VOCAB, 1_000_000, dtype=np.uint16))


def _status(pid: int) -> dict[str, int]:
    fields = {}
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key in ("RssAnon", "RssFile", "RssShmem", "VmHWM"):
                    fields[key] = int(value.split()[0]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return fields


def _tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as handle:
                    todo.extend(int(c) for c in handle.read().split())
        except (FileNotFoundError, ProcessLookupError):
            pass
    return pids


def measure(matrix: Path, outputs: Path, cache: Path) -> dict[str, float]:
    env = {**os.environ, "BENCH_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1", "BENCH_OUTPUTS": str(outputs)}
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "bench.cli", "run", str(matrix), "--device", "cpu",
                                "--outputs", str(outputs)], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    peak_anon = peak_file = hwm = 0
    while process.poll() is None:
        figures = [_status(p) for p in _tree(process.pid)]
        peak_anon = max(peak_anon, sum(f.get("RssAnon", 0) + f.get("RssShmem", 0) for f in figures))
        peak_file = max(peak_file, sum(f.get("RssFile", 0) for f in figures))
        hwm = max(hwm, sum(f.get("VmHWM", 0) for f in figures))
        time.sleep(0.01)
    wall = time.perf_counter() - started
    err = process.stderr.read() if process.stderr else ""
    if process.returncode != 0:
        raise SystemExit(f"bench run failed ({process.returncode}):\n{err}")
    return {"anon_mb": peak_anon / 1e6, "file_mb": peak_file / 1e6, "hwm_mb": hwm / 1e6, "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=None, help="where to write the shards (needs 8 GB for 4B)")
    parser.add_argument("--sizes", default="10M,100M,1B,4B")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--write", type=Path, default=None, help="write the results table (markdown) here")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="token-files-rss-", dir=args.dir))
    rows = []
    try:
        for label in args.sizes.split(","):
            tokens = SIZES[label]
            folder = root / label
            t0 = time.perf_counter()
            write_shards(folder, tokens)
            write_s = time.perf_counter() - t0
            matrix = root / f"{label}.toml"
            matrix.write_text(MATRIX.format(train=folder / "train_*.bin", valid=folder / "val_000000.bin",
                                            vocab=VOCAB))
            cache = root / f"cache-{label}"
            first = measure(matrix, root / f"out-{label}-1", cache)
            again = measure(matrix, root / f"out-{label}-2", cache)
            rows.append((label, tokens, write_s, first, again))
            print(f"{label}: first {first}, again {again}", flush=True)
            if not args.keep:
                shutil.rmtree(folder)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    table = render(rows)
    print(table)
    if args.write:
        args.write.write_text(table)


def render(rows: list) -> str:
    lines = [
        "| corpus | shards | peak anon MB (first run: id scan) | peak anon MB (again) | peak RssFile MB (again) "
        "| VmHWM MB (again) | wall s first / again |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, tokens, _, first, again in rows:
        shards = -(-tokens // SHARD_TOKENS)
        lines.append(f"| {label} tokens | {shards} | {first['anon_mb']:.0f} | {again['anon_mb']:.0f} | "
                     f"{again['file_mb']:.0f} | {again['hwm_mb']:.0f} | "
                     f"{first['wall_s']:.1f} / {again['wall_s']:.1f} |")
    growth_first = rows[-1][3]["anon_mb"] - rows[0][3]["anon_mb"]
    growth_again = rows[-1][4]["anon_mb"] - rows[0][4]["anon_mb"]
    head = textwrap.dedent(f"""\
        Run on {datetime.date.today()} on {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()},
        Python {platform.python_version()}. Growth of peak anonymous memory from {rows[0][0]} to {rows[-1][0]}
        tokens: {growth_first:+.0f} MB on the first run (id-range scan included), {growth_again:+.0f} MB after.
        """)
    return head + "\n" + "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
