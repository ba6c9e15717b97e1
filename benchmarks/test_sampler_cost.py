"""Cost of one memory sample, under pytest-benchmark (`tox -e benchmarks`).

The full with/without comparison is ``benchmarks/sampler_overhead.py``; this times the
function the sampler thread calls every interval, on whatever device this machine has.
"""

from __future__ import annotations

import torch

from bench import memory


def test_one_sample(benchmark):
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    sampler = memory.cell_sampler(device, memory.DEFAULT_INTERVAL_S)
    try:
        benchmark(sampler._state.sample_once)
    finally:
        sampler.stop()
    benchmark.extra_info["probes"] = sampler.sources
    # At the default 100 ms interval the sampler's share of one core is mean cost / 0.1 s.
    benchmark.extra_info["core_share_pct_at_100ms"] = benchmark.stats.stats.mean / memory.DEFAULT_INTERVAL_S * 100
