"""Step-window timing, the peak-FLOPs table, MFU arithmetic, and the figures a trained cell stores."""

from __future__ import annotations

import pytest
import torch

from bench import timing
from bench.cells import Cell, cell_id, resolve_config
from bench.registry import build_registry, plugin_manager
from bench.store import ResultStore
from bench.timing import StepWindowTimer, lookup_peak_tflops, matmul_precision, throughput
from bench.training import train_cell


def test_step_window_times_steps_10_to_19_and_syncs_only_there(monkeypatch):
    syncs = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: syncs.append(device))
    timer = StepWindowTimer(torch.device("cuda", 0))
    for step in range(40):
        timer.begin(step)
        timer.end(step)
    result = timer.result()
    assert len(syncs) == 20  # begin and end of each of the ten steps, nothing else
    assert len(result["step_times_10_19_s"]) == 10
    assert result["worst_step_10_19_s"] == max(result["step_times_10_19_s"])
    assert 10 <= result["worst_step_10_19_index"] <= 19
    assert result["step_times_10_19_s"][result["worst_step_10_19_index"] - 10] == result["worst_step_10_19_s"]


def test_step_window_on_cpu_never_synchronises_and_short_runs_have_no_worst_step(monkeypatch):
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: pytest.fail("synchronised on CPU"))
    timer = StepWindowTimer(torch.device("cpu"))
    for step in range(8):
        timer.begin(step)
        timer.end(step)
    assert timer.result() == {"worst_step_10_19_s": None, "worst_step_10_19_index": None, "step_times_10_19_s": []}


@pytest.mark.parametrize("name, precision, expected", [
    ("NVIDIA H100 80GB HBM3", "bf16", 989.4),
    ("NVIDIA H100 PCIe", "bf16", 756.5),
    ("NVIDIA H100 NVL", "tf32", 417.5),
    ("NVIDIA H200", "fp32", 67.0),
    ("NVIDIA A100-SXM4-80GB", "fp32", 19.5),
    ("NVIDIA A100 80GB PCIe", "tf32", 156.0),
    ("NVIDIA A10G", "bf16", 70.0),
    ("NVIDIA A10", "bf16", 125.0),
    ("NVIDIA L4", "bf16", 121.0),
    ("NVIDIA L40S", "bf16", None),  # not an L4
    ("Tesla T4", "fp16", 65.0),
    ("Tesla T4", "bf16", None),  # no bf16 hardware
    ("Tesla V100-SXM2-16GB", "fp16", 125.0),
    ("Tesla V100-PCIE-32GB", "fp16", 112.0),
    ("NVIDIA GeForce RTX 4090", "bf16", 165.2),
    ("NVIDIA GeForce RTX 3090", "fp32", 35.6),
    ("Some Future Accelerator", "bf16", None),
    (None, "bf16", None),
])
def test_peak_table_matches_nvml_names(name, precision, expected):
    assert lookup_peak_tflops(name, precision) == expected


def test_matmul_precision_follows_dtype_and_tf32_switch():
    assert matmul_precision(torch.device("cpu"), "bfloat16") == "bf16"
    assert matmul_precision(torch.device("cpu"), "float32") == "fp32"
    assert matmul_precision(torch.device("cuda"), "float32", allow_tf32=True) == "tf32"
    assert matmul_precision(torch.device("cuda"), "float32", allow_tf32=False) == "fp32"
    assert matmul_precision(torch.device("cuda"), "bfloat16", allow_tf32=True) == "bf16"
    assert matmul_precision(torch.device("cpu"), "float32", allow_tf32=True) == "fp32"
    # Default reads torch's global switch without failing on a CPU-only build.
    assert matmul_precision(torch.device("cuda"), "float32") in {"tf32", "fp32"}


def test_throughput_arithmetic_and_peak_precedence():
    common = dict(train_flops=6e12, train_time_s=10.0, steps=100, epochs=4)
    table = throughput(**common, peak_tflops_setting=0.0, device_name="NVIDIA A100-SXM4-40GB", precision="bf16")
    assert table["achieved_flops_per_s"] == pytest.approx(6e11)
    assert table["time_per_step_s"] == pytest.approx(0.1) and table["time_per_epoch_s"] == pytest.approx(2.5)
    assert table["peak_flops_per_s"] == pytest.approx(312e12)
    assert table["mfu"] == pytest.approx(6e11 / 312e12)
    assert "A100" in table["peak_flops_source"]
    given = throughput(**common, peak_tflops_setting=1.2, device_name="NVIDIA A100-SXM4-40GB", precision="bf16")
    assert given["mfu"] == pytest.approx(0.5) and given["peak_flops_source"] == "peak_tflops setting"
    cpu = throughput(**common, peak_tflops_setting=0.0, device_name=None, precision="fp32")
    assert cpu["achieved_flops_per_s"] == pytest.approx(6e11)
    assert cpu["mfu"] is None and cpu["peak_flops_per_s"] is None


class _Silent:
    def __getattr__(self, name):
        return lambda **kwargs: None


def test_trained_cell_stores_timing_flops_and_sampled_memory(tmp_path):
    registry = build_registry(plugin_manager())
    config = resolve_config(dict(model="gpt1", optimizer="adam", dataset="synthetic", vocab_size=16,
                                 train_tokens=4000, valid_tokens=600, test_tokens=600, seq_len=16, batch_size=8,
                                 epochs=2, steps_per_epoch=12, n_layer=1, n_embd=16, n_head=2, n_positions=32,
                                 memory_interval_ms=10, peak_tflops=0.5), registry, "test")
    cell = Cell(cell_id(config), "timing", config)
    summary = train_cell(cell, registry, _Silent(), torch.device("cpu"), ResultStore(tmp_path, "t").cell(cell.id))
    assert len(summary["step_times_10_19_s"]) == 10 and summary["worst_step_10_19_s"] > 0
    assert summary["time_per_step_s"] == pytest.approx(summary["train_time_s"] / 24)
    assert summary["time_per_epoch_s"] == pytest.approx(summary["train_time_s"] / 2)
    assert summary["achieved_flops_per_s"] == pytest.approx(summary["train_flops"] / summary["train_time_s"])
    assert summary["mfu"] == pytest.approx(summary["achieved_flops_per_s"] / 0.5e12)
    assert summary["gpu_name"] is None and summary["matmul_precision"] == "fp32"
    memory = summary["memory"]
    assert memory["samples"] >= 2 and memory["rss_mean_bytes"] > 0
    assert memory["source"].startswith("process RSS")
    assert timing.WORST_WINDOW == (10, 19)
