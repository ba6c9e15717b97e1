"""Step timing, achieved FLOP/s and model FLOPs utilisation (MFU).

Training FLOPs are analytic: each model plugin's ``flops_per_token(seq_len)`` counts
``6 x (matmul weights)`` per token (2 FLOPs per multiply-add forward, 4 backward) plus, for
attention models, the causal score and value matmuls (``6 x n_layer x seq_len x n_embd``);
a cell's total is that times the tokens it trained on. Achieved FLOP/s is the total over the
training wall time (evaluation excluded), and MFU is achieved over the device's dense peak.
"""

from __future__ import annotations

import re
import time
from typing import Any

import torch

WORST_WINDOW = (10, 19)  # 0-based optimizer steps: past warm-up and allocator growth, before steady noise


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so a clock read next measures it; a no-op on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepWindowTimer:
    """Times each optimizer step in ``[first, last]`` exactly, and no other.

    ``begin(step)``/``end(step)`` synchronise the device only inside the window (20
    synchronisations per cell by default), so the hot loop stays asynchronous elsewhere.
    Evaluation and logging happen after ``end``, so they never count as step time.
    """

    def __init__(self, device: torch.device, first: int = WORST_WINDOW[0], last: int = WORST_WINDOW[1],
                 times: dict[int, float] | None = None):
        self.device = device
        self.first, self.last = first, last
        # A caller's dict (the trainer's checkpointed loop state) keeps times across a resume.
        self.times: dict[int, float] = times if times is not None else {}
        self._began: float | None = None

    def begin(self, step: int) -> None:
        if self.first <= step <= self.last:
            synchronize(self.device)  # the previous step's queued kernels are not this step's
            self._began = time.perf_counter()

    def end(self, step: int) -> None:
        if self._began is not None and self.first <= step <= self.last:
            synchronize(self.device)
            self.times[step] = time.perf_counter() - self._began
            self._began = None

    def result(self) -> dict[str, Any]:
        return window_result(self.times)


def window_result(times: dict[int, float]) -> dict[str, Any]:
    """The summary fields of step times 10-19: the worst one, its step, and all of them in order."""
    if not times:
        return {"worst_step_10_19_s": None, "worst_step_10_19_index": None, "step_times_10_19_s": []}
    worst = max(times, key=times.__getitem__)
    return {"worst_step_10_19_s": times[worst], "worst_step_10_19_index": worst,
            "step_times_10_19_s": [times[s] for s in sorted(times)]}


# Dense (no 2:4 sparsity) peak TFLOP/s from the vendors' datasheets; tensor-core figures for
# bf16/fp16/tf32 and CUDA-core figures for fp32. Matched against the NVML/torch device name,
# most specific pattern first. The A10G has no public NVIDIA datasheet: its row uses the
# figures AWS publishes for G5 instances. "None" marks a precision the chip lacks in hardware.
PEAK_TFLOPS: list[tuple[str, dict[str, float | None]]] = [
    (r"H200 NVL", {"bf16": 835.5, "fp16": 835.5, "tf32": 417.5, "fp32": 60.0}),
    (r"H200", {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 67.0}),
    (r"H100 NVL", {"bf16": 835.5, "fp16": 835.5, "tf32": 417.5, "fp32": 60.0}),
    (r"H100 PCIe", {"bf16": 756.5, "fp16": 756.5, "tf32": 378.0, "fp32": 51.2}),
    (r"H100", {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 67.0}),  # SXM5
    (r"A100", {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5}),
    (r"A10G", {"bf16": 70.0, "fp16": 70.0, "tf32": 35.0, "fp32": 31.2}),
    (r"A10\b", {"bf16": 125.0, "fp16": 125.0, "tf32": 62.5, "fp32": 31.2}),
    (r"\bL4\b", {"bf16": 121.0, "fp16": 121.0, "tf32": 60.0, "fp32": 30.3}),
    (r"\bT4\b", {"bf16": None, "fp16": 65.0, "tf32": None, "fp32": 8.1}),
    (r"V100.*SXM|SXM.*V100", {"bf16": None, "fp16": 125.0, "tf32": None, "fp32": 15.7}),
    (r"V100", {"bf16": None, "fp16": 112.0, "tf32": None, "fp32": 14.0}),  # PCIe
    # GeForce: fp16/bf16 tensor rate with fp32 accumulation, which is what torch uses.
    (r"RTX 4090", {"bf16": 165.2, "fp16": 165.2, "tf32": 82.6, "fp32": 82.6}),
    (r"RTX 3090", {"bf16": 71.0, "fp16": 71.0, "tf32": 35.6, "fp32": 35.6}),
]


def lookup_peak_tflops(device_name: str | None, precision: str) -> float | None:
    """Dense peak TFLOP/s of a known GPU at ``precision`` (bf16, fp16, tf32, fp32), else None."""
    if not device_name:
        return None
    for pattern, peaks in PEAK_TFLOPS:
        if re.search(pattern, device_name, flags=re.IGNORECASE):
            return peaks.get(precision)
    return None


def matmul_precision(device: torch.device, dtype: str, allow_tf32: bool | None = None) -> str:
    """The arithmetic the training matmuls actually ran in, which decides the applicable peak.

    ``allow_tf32`` defaults to torch's current global switch.
    """
    if dtype == "bfloat16":
        return "bf16"
    if dtype == "float16":
        return "fp16"
    # float32 matmuls use TF32 tensor cores only when torch is told to allow it.
    if device.type != "cuda":
        return "fp32"
    if allow_tf32 is None:
        allow_tf32 = bool(torch.backends.cuda.matmul.allow_tf32)
    return "tf32" if allow_tf32 else "fp32"


def throughput(*, train_flops: float | None, train_time_s: float, steps: int, epochs: int,
               peak_tflops_setting: float, device_name: str | None, precision: str) -> dict[str, Any]:
    """Per-step and per-epoch time, achieved FLOP/s and MFU for one cell.

    A positive ``peak_tflops_setting`` (the cell's ``peak_tflops``) wins over the table; with
    neither, MFU is left empty rather than guessed.
    """
    achieved = train_flops / train_time_s if train_flops and train_time_s > 0 else None
    peak: float | None
    source: str | None
    if peak_tflops_setting > 0:
        peak, source = peak_tflops_setting * 1e12, "peak_tflops setting"
    else:
        table = lookup_peak_tflops(device_name, precision)
        peak = table * 1e12 if table else None
        source = f"datasheet dense {precision} peak for {device_name}" if table else None
    return {
        "time_per_step_s": train_time_s / steps if steps else None,
        "time_per_epoch_s": train_time_s / epochs if epochs else None,
        "matmul_precision": precision,
        "achieved_flops_per_s": achieved,
        "peak_flops_per_s": peak,
        "peak_flops_source": source,
        "mfu": achieved / peak if achieved is not None and peak else None,
    }
