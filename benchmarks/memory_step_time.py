"""Step time of the chunked loss vs full logits, interleaved step by step in one process.

``benchmarks/memory.py`` measures peaks, one process per figure; its step times come from runs
minutes apart and drift with the machine's load. This script isolates the loss's cost: one
model (hw3's gpt1 cell shape: 1 layer x 256, 4 heads, Adam, batch 16, seq 128, vocabulary 50,257),
one thread, and training steps that cycle through ``loss_chunk = 0`` and each ``loss_chunk = N``
(order rotated every round), each timed in CPU seconds (``time.process_time``, robust to other
processes on the machine) and wall seconds. Figures: medians, and the median over rounds of
each round's ratio chunked / full.

    python benchmarks/memory_step_time.py --pairs 10 --chunks 256 512 1024

Goal: chunked step time within +-3 % of full logits.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from datetime import UTC, datetime

import torch

from bench.loss import lm_loss
from bench_plugins import models

SHAPE = {"n_layer": 1, "n_embd": 256, "n_head": 4, "n_positions": 512, "dropout": 0.0, "tie_weights": True}
VOCAB, BATCH, SEQ = 50257, 16, 128


def step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: torch.Tensor,
         chunk: int) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    loss = lm_loss(model, batch[:, :-1], batch[:, 1:], chunk=chunk)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.process_time() - cpu, time.perf_counter() - wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=10, help="rounds (each times every setting once)")
    parser.add_argument("--chunks", type=int, nargs="+", default=[256, 512, 1024])
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    component = {c.name: c for c in models.bench_models()}["gpt1"]
    model = component.factory(VOCAB, **SHAPE)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, VOCAB, (BATCH, SEQ + 1), generator=g) for _ in range(4)]
    settings = [0, *args.chunks]
    for chunk in settings:  # warm-up: allocator, optimizer state
        step(model, optimizer, batches[0], chunk)
    times: dict[int, list[tuple[float, float]]] = {chunk: [] for chunk in settings}
    for round_ in range(args.pairs):
        shift = round_ % len(settings)
        for chunk in settings[shift:] + settings[:shift]:
            times[chunk].append(step(model, optimizer, batches[round_ % len(batches)], chunk))
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, torch {torch.__version__}, 1 thread; "
          f"gpt1 1 x 256, batch {BATCH} x {SEQ}, vocabulary {VOCAB}; {args.pairs} rounds\n")
    print("| loss | CPU s / step (median) | wall s / step (median) | CPU time / full (median of rounds) |\n"
          "|---|---:|---:|---:|")
    for chunk, series in times.items():
        ratio = statistics.median(c[0] / f[0] for c, f in zip(series, times[0]))
        print(f"| {'full logits' if chunk == 0 else f'loss_chunk {chunk}'} | "
              f"{statistics.median(t[0] for t in series):.3f} | {statistics.median(t[1] for t in series):.3f} | "
              f"{ratio:.3f} |")


if __name__ == "__main__":
    main()
