"""Training-batch throughput on memory-mapped token files: bench's sampler vs a bare nanoGPT one.

Both read the same files, written by this script into ``--dir``: ``--tokens`` uint16 ids as one
headerless ``train.bin`` (nanoGPT's layout) and the same ids as llm.c shards of 100M tokens.

* ``bare``: nanoGPT's ``get_batch`` for the CPU: a fresh ``np.memmap`` of ``train.bin`` per batch,
  ``ix = torch.randint(len(data) - block_size, (batch_size,))``, then ``x`` and ``y`` each stacked
  from per-row ``torch.from_numpy(data[i:i+block_size].astype(np.int64))``.
* ``bench``: :class:`bench.data.samplers.RandomBatchSampler` over the token-files dataset's
  ``train.bin`` opened as raw uint16 (``token_dtype = "uint16"``), as ``bench run`` builds it;
* ``bench-shards``: the same over the llm.c shards (windows drawn across all shards by size).

Each measurement draws ``--batches`` batches of ``--batch-size`` x ``--seq-len`` and counts the
tokens of ``x`` per second. ``warm``: the files are in the page cache (read once before). ``cold``:
before each measurement the files' cached pages are dropped with
``posix_fadvise(POSIX_FADV_DONTNEED)`` (no root needed), so every window is read from the disk.
Rounds interleave the sides, the order rotating each round; figures are medians over rounds.

    python benchmarks/token_files_sampler.py --dir /big/disk/tmp --write benchmarks/results/token_files_sampler.md

Goals: bench >= 1.0x the bare sampler, and >= 10M tokens/s.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

SHARD_TOKENS = 100_000_000


def write_files(folder: Path, tokens: int) -> None:
    from bench_plugins.token_files import write_llmc_shard

    rng = np.random.default_rng(0)
    with (folder / "train.bin").open("wb") as raw:
        for index, start in enumerate(range(0, tokens, SHARD_TOKENS)):
            ids = rng.integers(0, 50_257, min(SHARD_TOKENS, tokens - start), dtype=np.uint16)
            raw.write(ids.tobytes())
            write_llmc_shard(folder / f"shard_{index:06d}.bin", ids)


def drop_cache(folder: Path) -> None:
    for path in folder.iterdir():
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fdatasync(fd)  # dirty pages cannot be dropped: make them clean first
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def warm_cache(folder: Path) -> None:
    for path in folder.iterdir():
        with path.open("rb") as handle:
            while handle.read(1 << 24):
                pass


def bare(folder: Path, batch_size: int, seq_len: int, batches: int, seed: int) -> float:
    torch.manual_seed(seed)
    started = time.perf_counter()
    for _ in range(batches):
        data = np.memmap(folder / "train.bin", dtype=np.uint16, mode="r")
        ix = torch.randint(len(data) - seq_len, (batch_size,))
        x = torch.stack([torch.from_numpy((data[i:i + seq_len]).astype(np.int64)) for i in ix])
        y = torch.stack([torch.from_numpy((data[i + 1:i + 1 + seq_len]).astype(np.int64)) for i in ix])
        assert x.shape == y.shape
    return batches * batch_size * seq_len / (time.perf_counter() - started)


def bench(folder: Path, batch_size: int, seq_len: int, batches: int, seed: int, shards: bool) -> float:
    from bench.data.samplers import RandomBatchSampler
    from bench_plugins.token_files import token_files

    started = time.perf_counter()  # opening the files (stat, headers, cached id ranges) is counted too
    if shards:
        corpus = token_files(train=str(folder / "shard_*.bin"), vocab_size=65_536)
    else:
        corpus = token_files(train=str(folder / "train.bin"), token_dtype="uint16", vocab_size=65_536)
    sampler = RandomBatchSampler(corpus.splits["train"], batch_size, seq_len, seed)
    for _ in range(batches):
        x, y = sampler.next_batch()
    return batches * batch_size * seq_len / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--tokens", type=int, default=1_000_000_000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--write", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    folder = Path(tempfile.mkdtemp(prefix="token-files-sampler-", dir=args.dir))
    sides = {
        "bare": lambda seed: bare(folder, args.batch_size, args.seq_len, args.batches, seed),
        "bench": lambda seed: bench(folder, args.batch_size, args.seq_len, args.batches, seed, shards=False),
        "bench-shards": lambda seed: bench(folder, args.batch_size, args.seq_len, args.batches, seed, shards=True),
    }
    results: dict[tuple[str, str], list[float]] = {}
    try:
        write_files(folder, args.tokens)
        for cache in ("warm", "cold"):
            if cache == "warm":
                warm_cache(folder)
            for round_ in range(args.rounds):
                names = list(sides)
                names = names[round_ % len(names):] + names[: round_ % len(names)]
                for name in names:
                    if cache == "cold":
                        drop_cache(folder)
                    results.setdefault((cache, name), []).append(sides[name](1000 + round_))
                print(cache, round_, {k[1]: f"{v[-1] / 1e6:.1f}M" for k, v in results.items() if k[0] == cache},
                      flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    table = render(results, args)
    print(table)
    if args.write:
        args.write.write_text(table)


def render(results: dict[tuple[str, str], list[float]], args: argparse.Namespace) -> str:
    lines = [f"Run on {datetime.date.today()} on {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}, "
             f"torch {torch.__version__}, 1 torch thread. {args.tokens:,} uint16 tokens, batches of "
             f"{args.batch_size} x {args.seq_len}, {args.batches} batches per measurement, {args.rounds} rounds "
             "per cache state (sides interleaved, order rotating); medians.", "",
             "| page cache | side | median tokens/s | min - max | vs bare |", "|---|---|---|---|---|"]
    for cache in ("warm", "cold"):
        base = statistics.median(results[(cache, "bare")])
        for name in ("bare", "bench", "bench-shards"):
            values = results[(cache, name)]
            median = statistics.median(values)
            lines.append(f"| {cache} | {name} | {median / 1e6:.1f}M | {min(values) / 1e6:.1f}M - "
                         f"{max(values) / 1e6:.1f}M | {median / base:.2f}x |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
