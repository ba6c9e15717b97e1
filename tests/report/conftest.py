"""Cell summaries in every shape a report meets: current CPU and GPU cells, a cell written before
timing/memory sampling existed, and a failed cell with almost nothing in it."""

from __future__ import annotations

import copy
import math

import pytest

MIB = 2**20


def _cell(name, model, optimizer, layers, *, val, train, test, time, peak_rss):
    return {
        "id": name.replace("-", "")[:12], "name": name, "status": "ok", "device": "cpu",
        "config": {"model": model, "optimizer": optimizer, "n_layer": layers, "dataset": "synthetic", "seed": 0,
                   "lr": 0.003},
        "best_val_loss": math.log(val), "best_val_ppl": val, "train_ppl_at_best": train, "best_epoch": 3,
        "test_ppl": test, "entropy_floor_ppl": 2.9, "epochs": 3, "steps": 300,
        "train_time_s": time, "eval_time_s": time / 10, "tokens_per_s": 153600 / time,
        "time_per_step_s": time / 300, "time_per_epoch_s": time / 3, "worst_step_10_19_s": time / 150,
        "step_times_10_19_s": [time / 300] * 10,
        "params_total": 40000 * layers, "params_non_embedding": 36000 * layers, "flops_per_token": 220000 * layers,
        "train_flops": 220000 * layers * 153600, "achieved_flops_per_s": 220000 * layers * 153600 / time,
        "peak_flops_per_s": None, "mfu": None, "gpu_name": None,
        "memory": {"rss_mean_bytes": peak_rss - 5 * MIB, "rss_sampled_peak_bytes": peak_rss,
                   "rss_peak_bytes": peak_rss + MIB, "samples": 12, "interval_ms": 100.0,
                   "nvml_process_peak_bytes": None, "source": "process RSS (CPU run, no GPU memory)",
                   "sources": {"rss": "process RSS from /proc/self/statm"}},
    }


@pytest.fixture
def summaries():
    lstm_sgd = _cell("lstm-L1-sgd", "lstm", "sgd", 1, val=60.0, train=61.0, test=60.5, time=1.0, peak_rss=400 * MIB)
    lstm_adamw = _cell("lstm-L1-adamw", "lstm", "adamw", 1, val=3.1, train=3.2, test=3.15, time=1.2,
                       peak_rss=410 * MIB)
    gpt_adamw = _cell("gpt1-L2-adamw", "gpt1", "adamw", 2, val=3.2, train=3.3, test=3.25, time=3.0,
                      peak_rss=420 * MIB)
    gpu = _cell("gpt1-L4-adamw", "gpt1", "adamw", 4, val=3.5, train=3.6, test=3.55, time=0.5, peak_rss=2000 * MIB)
    gpu.update(device="cuda", gpu_name="NVIDIA H100 80GB HBM3", peak_flops_per_s=989.4e12,
               mfu=gpu["achieved_flops_per_s"] / 989.4e12, peak_flops_source="datasheet dense bf16 peak")
    gpu["memory"] = {"nvml_process_mean_bytes": 900 * MIB, "nvml_process_peak_bytes": 1000 * MIB,
                     "nvml_device_used_peak_bytes": 1500 * MIB, "gpu_util_mean_pct": 87.0,
                     "allocated_peak_bytes": 700 * MIB, "reserved_peak_bytes": 800 * MIB,
                     "rss_peak_bytes": 2000 * MIB, "samples": 6, "interval_ms": 100.0,
                     "source": "NVML process memory", "sources": {"nvml": "NVML (NVIDIA H100 80GB HBM3, ...)"}}
    # Written before timing and memory sampling: no worst step, no per-step time, OS peak only.
    old = copy.deepcopy(lstm_adamw)
    old.update(id="old000000000", name="lstm-L2-adamw")
    old["config"]["n_layer"] = 2
    for key in ("time_per_step_s", "time_per_epoch_s", "worst_step_10_19_s", "step_times_10_19_s",
                "achieved_flops_per_s", "peak_flops_per_s", "mfu", "gpu_name"):
        del old[key]
    old["memory"] = {"rss_peak_bytes": 415 * MIB, "source": "getrusage ru_maxrss (process lifetime peak)"}
    failed = {"id": "failed000000", "name": "gpt1-L1-sgd", "status": "diverged", "step": 40, "device": "cpu",
              "config": {"model": "gpt1", "optimizer": "sgd", "n_layer": 1, "dataset": "synthetic", "seed": 0},
              "reason": "Diverged: train loss became nan at step 40"}
    return [lstm_sgd, lstm_adamw, gpt_adamw, gpu, old, failed]
