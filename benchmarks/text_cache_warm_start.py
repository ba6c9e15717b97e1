"""Warm start of a text dataset: the seconds and peak RSS from nothing to token arrays, cache warm.

Usage:

    BENCH_DATA_DIR=... TIKTOKEN_CACHE_DIR=... python benchmarks/text_cache_warm_start.py \\
        [--other-checkout DIR] [--dataset wikitext2] [--repeats 3]

Each run is a fresh process that does what ``bench run`` does before the first step of a cell: the
data check (:func:`bench.data.loading.check_data_available`) and :func:`load_cell_data` on the CPU,
with the token cache already filled by a first, untimed run. It prints the wall seconds of those two
calls and the process's peak RSS (``ru_maxrss``, which includes the interpreter, torch and the
plugins). With ``--other-checkout`` (a folder holding another version of the repository, e.g.
``git archive main | tar -x -C DIR``) the same is measured for that version, interleaved, each with
its own cache folder.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

PROBE = """
import json, resource, sys, time
import torch
from bench.data.loading import check_data_available, load_cell_data
from bench.registry import load_plugins
registry = load_plugins().registry
dataset = registry.get("dataset", sys.argv[1])
config = {**dataset.defaults, "dataset": sys.argv[1], "tokenizer": "gpt2"}
started = time.perf_counter()
check_data_available([config], registry)
data = load_cell_data(config, registry, torch.device("cpu"))
seconds = time.perf_counter() - started
print(json.dumps({"seconds": seconds, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "train_tokens": int(data.splits["train"].numel()), "words": data.words}))
"""


def probe(checkout: Path | None, dataset: str, cache: Path) -> dict:
    env = {**os.environ, "BENCH_CACHE_DIR": str(cache), "BENCH_OFFLINE": "1"}
    if checkout is not None:  # its bench and its built-in plugins first on the path
        shim = cache.parent / f"shim-{cache.name}"
        shim.mkdir(exist_ok=True)
        if not (shim / "bench_plugins").exists():
            (shim / "bench_plugins").symlink_to(checkout / "plugins")
        env["PYTHONPATH"] = f"{checkout}{os.pathsep}{shim}"
    out = subprocess.run([sys.executable, "-c", PROBE, dataset], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--other-checkout", type=Path)
    parser.add_argument("--dataset", default="wikitext2")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    sides = {"this": None, **({"other": args.other_checkout.resolve()} if args.other_checkout else {})}
    with tempfile.TemporaryDirectory(prefix="bench-warm-") as tmp:
        results: dict[str, list[dict]] = {side: [] for side in sides}
        for side, checkout in sides.items():
            probe(checkout, args.dataset, Path(tmp) / side)  # fills the cache
        for _ in range(args.repeats):
            for side, checkout in sides.items():
                results[side].append(probe(checkout, args.dataset, Path(tmp) / side))
    for side, runs in results.items():
        times = ", ".join(f"{r['seconds']:.2f}" for r in runs)
        print(f"{side}: {args.dataset} warm start median {statistics.median(r['seconds'] for r in runs):.2f} s "
              f"(runs {times}), peak RSS max "
              f"{max(r['peak_rss_mib'] for r in runs):.0f} MiB, train tokens {runs[0]['train_tokens']:,}, "
              f"words {runs[0]['words']}")


if __name__ == "__main__":
    main()
