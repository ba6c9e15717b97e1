"""How much the background memory sampler slows training: steps/s with and without it.

Trains a real model (gpt1 from the built-in plugins) with a real optimizer in the trainer's
hot-loop shape, alternating rounds without and with a sampler running at the default 100 ms
interval, so drifts in machine load hit both conditions alike. Also times one sample on its
own: cost per sample / interval is the fraction of one core the sampler takes, a bound that
does not depend on run-to-run noise.

    python benchmarks/sampler_overhead.py                # CPU, RSS probe
    python benchmarks/sampler_overhead.py --device cuda  # GPU, NVML + RSS probes
    python benchmarks/sampler_overhead.py --threads 1 --write run.md  # markdown for benchmarks/results/

Goal: overhead < 0.5 %.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import torch
import torch.nn.functional as F

from bench import memory
from bench.registry import build_registry, plugin_manager

VOCAB = 512


def build(device: torch.device, n_layer: int, n_embd: int):
    registry = build_registry(plugin_manager())
    component = registry.get("model", "gpt1")
    torch.manual_seed(0)
    model = component.factory(VOCAB, **{**component.defaults, "n_layer": n_layer, "n_embd": n_embd,
                                        "n_head": 4, "n_positions": 128}).to(device)
    optimizer = registry.get("optimizer", "adamw").factory(
        model.parameters(), lr=1e-3, device_type=device.type,
        **registry.get("optimizer", "adamw").defaults)
    return model, optimizer


def train_steps(model, optimizer, batch: torch.Tensor, steps: int) -> tuple[float, float]:
    """Steps per second over ``steps`` optimizer steps (the device is synchronised only at the
    ends) and process CPU seconds per step, all threads included, the sampler's among them.
    On a shared machine the CPU figure is the steadier of the two: other processes' load
    stretches wall time but not this process's CPU time."""
    device = batch.device
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    cpu_started = time.process_time()
    started = time.perf_counter()
    for _ in range(steps):
        logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, VOCAB), batch[:, 1:].reshape(-1))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return steps / (time.perf_counter() - started), (time.process_time() - cpu_started) / steps


def median_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float]:
    """Distribution-free confidence interval for the median: the k-th smallest and k-th largest
    values, with k the largest index such that Binomial(n, 1/2) puts <= (1 - confidence) / 2 below it."""
    ordered, n = sorted(values), len(values)
    tail, k, cumulative = (1 - confidence) / 2, 0, 0.0
    while k < n // 2:
        cumulative += math.comb(n, k) / 2**n
        if cumulative > tail:
            break
        k += 1
    k = max(k, 1)
    return ordered[k - 1], ordered[n - k]


def sample_cost_s(device: torch.device, repeats: int = 2000) -> tuple[float, dict]:
    sampler = memory.cell_sampler(device, interval_s=memory.DEFAULT_INTERVAL_S)
    state = sampler._state  # the exact function the thread calls every interval
    started = time.perf_counter()
    for _ in range(repeats):
        state.sample_once()
    cost = (time.perf_counter() - started) / repeats
    sampler.stop()  # never started: this only releases the probes
    return cost, sampler.sources | sampler.notes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--rounds", type=int, default=10, help="A/B pairs")
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps per round")
    parser.add_argument("--n-layer", type=int, default=2)
    parser.add_argument("--n-embd", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch intra-op threads (default 0: torch's choice). 1 keeps OpenMP barriers from "
                             "stalling when other processes share the cores")
    parser.add_argument("--write", type=Path, help="write the result as markdown to this file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    model, optimizer = build(device, args.n_layer, args.n_embd)
    batch = torch.randint(0, VOCAB, (args.batch, args.seq + 1), device=device)
    train_steps(model, optimizer, batch, max(5, args.steps // 4))  # warm-up: allocator, kernels, caches

    rate: dict[str, list[float]] = {"off": [], "on": []}
    cpu: dict[str, list[float]] = {"off": [], "on": []}
    samples, thread_cpu_s, on_wall_s = 0, 0.0, 0.0
    for round_index in range(args.rounds):
        # Alternate which condition goes first so a load trend does not favour one of them.
        for condition in ("off", "on") if round_index % 2 == 0 else ("on", "off"):
            sampler = memory.cell_sampler(device, memory.DEFAULT_INTERVAL_S).start() if condition == "on" else None
            steps_per_s, cpu_per_step = train_steps(model, optimizer, batch, args.steps)
            if sampler is not None:
                result = sampler.stop()
                samples = result["samples"]
                thread_cpu_s += result["sampler_cpu_s"]
                on_wall_s += args.steps / steps_per_s
            rate[condition].append(steps_per_s)
            cpu[condition].append(cpu_per_step)
        print(f"round {round_index + 1}/{args.rounds}: off {rate['off'][-1]:.3f} steps/s, "
              f"on {rate['on'][-1]:.3f} steps/s", flush=True)
    cost, sources = sample_cost_s(device)

    def pct(before: float, after: float) -> float:
        return (after - before) / before * 100

    off, on = statistics.median(rate["off"]), statistics.median(rate["on"])
    slowdown = -pct(off, on)
    pair_slowdowns = sorted(-pct(a, b) for a, b in zip(rate["off"], rate["on"]))
    cpu_off, cpu_on = statistics.median(cpu["off"]), statistics.median(cpu["on"])
    cpu_extra = pct(cpu_off, cpu_on)
    duty = cost / memory.DEFAULT_INTERVAL_S * 100
    in_situ = thread_cpu_s / on_wall_s * 100
    low, high = median_interval(pair_slowdowns)
    if high < 0.5:
        ab_verdict = "the A/B comparison confirms < 0.5 %"
    elif low > 0.5:
        ab_verdict = "the A/B comparison shows MORE than 0.5 %"
    else:
        ab_verdict = "the A/B comparison cannot resolve 0.5 % at this machine's noise level"
    direct = "below" if duty < 0.5 and in_situ < 0.5 else "ABOVE"
    lines = [
        "# Memory sampler overhead",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC with `python benchmarks/sampler_overhead.py "
        f"{' '.join(sys.argv[1:])}` (niceness {os.nice(0)}).",
        "",
        f"- Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"{torch.cuda.get_device_name(device) if device.type == 'cuda' else 'no GPU'}; "
        f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads; "
        f"load average at the end {os.getloadavg()[0]:.1f}.",
        f"- Workload: gpt1, n_layer={args.n_layer}, n_embd={args.n_embd}, batch {args.batch} x {args.seq} tokens, "
        f"AdamW; {args.rounds} alternating rounds of {args.steps} steps per condition.",
        f"- Sampler: interval {memory.DEFAULT_INTERVAL_S * 1000:.0f} ms, probes: "
        + "; ".join(f"{k}: {v}" for k, v in sources.items()) + f" ({samples} samples in the last round).",
        "",
        "| | steps/s median (min-max) | CPU ms/step median (min-max) |",
        "|---|---|---|",
        f"| without sampler | {off:.3f} ({min(rate['off']):.3f}-{max(rate['off']):.3f}) | "
        f"{cpu_off * 1e3:.1f} ({min(cpu['off']) * 1e3:.1f}-{max(cpu['off']) * 1e3:.1f}) |",
        f"| with sampler | {on:.3f} ({min(rate['on']):.3f}-{max(rate['on']):.3f}) | "
        f"{cpu_on * 1e3:.1f} ({min(cpu['on']) * 1e3:.1f}-{max(cpu['on']) * 1e3:.1f}) |",
        "",
        f"- Slowdown in steps/s (medians): **{slowdown:+.2f} %**; per A/B pair from {pair_slowdowns[0]:+.2f} % "
        f"to {pair_slowdowns[-1]:+.2f} % (median {statistics.median(pair_slowdowns):+.2f} %).",
        f"- Extra process CPU time per step (medians): **{cpu_extra:+.2f} %**.",
        f"- One sample costs {cost * 1e6:.1f} us, i.e. **{duty:.4f} %** of one core at the 100 ms interval: "
        "the sampler's own share of the machine, independent of run-to-run noise.",
        f"- The sampler thread's own CPU time during the runs with it: {thread_cpu_s * 1e3:.1f} ms over "
        f"{on_wall_s:.1f} s of training, **{thread_cpu_s / on_wall_s * 100:.4f} %** (in-situ, wake-ups included).",
        f"- 95 % distribution-free interval for the median per-pair slowdown: {low:+.2f} % to {high:+.2f} % "
        "(order statistics, so a round disturbed by another process cannot drag it).",
        f"- Goal < 0.5 %: the sampler's own cost is {direct} it; {ab_verdict}.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        args.write.parent.mkdir(parents=True, exist_ok=True)
        args.write.write_text(text)


if __name__ == "__main__":
    main()
