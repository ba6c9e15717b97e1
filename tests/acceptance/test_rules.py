"""The acceptance rules on recorded numbers: for each of the 14 checks a passing and a failing record."""

from __future__ import annotations

import copy
from typing import Any, Callable

import pytest

from bench.acceptance.rules import CHECKS, GIB, MIB, judge, judge_all

BY_KEY = {c.key: c for c in CHECKS}
UUID_SOURCE = "NVML (NVIDIA H100 80GB HBM3, matched by UUID, nvmlDeviceGetComputeRunningProcesses_v3)"
CURVE = {"10": 3.2, "20": 2.9, "30": 2.7, "val@30": 2.75}


def hw3_cells(status: str = "ok") -> list[dict[str, Any]]:
    return [{"name": f"cell{i}", "status": status, "time_per_step_s": 0.01, "tokens_per_s": 2e5,
             "memory_bytes": 2.0e9, "memory_peak_bytes": 2.2e9, "memory_source": "NVML process mean"}
            for i in range(12)]


GOOD: dict[str, dict[str, Any]] = {
    "nvml_identity": {"direct": {"torch_uuid": "GPU-1", "nvml_uuid": "GPU-1", "source": UUID_SOURCE},
                      "visible": {"torch_uuid": "GPU-1", "nvml_uuid": "GPU-1", "source": UUID_SOURCE,
                                  "cuda_visible_devices": "GPU-1"}},
    "memory_ordering": {"allocated_peak_bytes": 1.0 * GIB, "reserved_peak_bytes": 1.2 * GIB,
                        "nvml_process_peak_bytes": 1.7 * GIB, "nvml_device_used_peak_bytes": 1.8 * GIB,
                        "memory_source": "NVML process memory", "mig_mode": "disabled",
                        "tensor": {"allocated_delta_bytes": GIB, "nvml_process_delta_bytes": GIB + 2 * MIB,
                                   "nvml_device_delta_bytes": GIB + 2 * MIB}},
    "sampler_overhead": {"sampling_step_s": [0.0101, 0.0100, 0.0101], "disabled_step_s": [0.0100, 0.0101, 0.0100],
                         "interval_ms": 100},
    "step_timing": {"timer_s": [0.0102] * 10, "event_s": [0.0100] * 10},
    "mixed_precision": {"bf16": {"step": 50, "loss_fp32": 3.00, "loss_bf16": 3.03,
                                 "weight_dtypes": ["torch.float32"], "optimizer_dtypes": ["torch.float32"]},
                        "fp16": {"scales": [2.0**31, 2.0**30, 2.0**30], "overflow_steps": [0, 1],
                                 "applied_overflow_steps": [], "final_loss": 3.1}},
    "tf32": {"size": 4096, "ms_off": 3.0, "ms_on": 0.6, "warnings": [], "fp32_precision": "tf32"},
    "compile": {"compile_time_s": 25.0, "time_per_step_s": 0.01, "steps": 30, "graphs_before": 2, "graphs_after": 2,
                "step": 20, "loss_compiled": 2.9001, "loss_eager": 2.9},
    "pin_memory": {"losses": {"pinned": CURVE, "unpinned": CURVE, "unpinned_again": CURVE},
                   "step_s": {"pinned": [0.0100, 0.0101], "unpinned": [0.0101, 0.0100]}},
    "jobs_oom": {"gpus_visible": 1, "workers": ["GPU 0"], "statuses": {"a": "ok", "huge": "oom", "b": "ok"},
                 "nvml_sources": {"a": UUID_SOURCE, "b": UUID_SOURCE}, "oom_cell": "huge", "oom_batch": 1000,
                 "oom_micro_batch": 1000, "retry_seen": True, "cell_after_oom": True},
    "mfu": {"mfu": 0.45, "achieved_flops_per_s": 445e12, "peak_flops_per_s": 989.4e12,
            "peak_flops_source": "datasheet dense bf16 peak for NVIDIA H100 80GB HBM3", "tokens_per_s": 2e6,
            "device_name": "NVIDIA H100 80GB HBM3"},
    "determinism": {"step": 20, "loss_first": 2.9, "loss_second": 2.9, "nondeterministic_ops": []},
    "sigkill_resume": {"killed_at_step": 100, "finished_before_kill": False, "resumed_at": [100],
                       "reference": CURVE, "reference_again": dict(CURVE), "resumed": dict(CURVE)},
    "hellaswag_bf16": {"items": 100, "agreement": 0.97, "acc_fp32": 0.26, "acc_bf16": 0.27,
                       "acc_norm_fp32": 0.25, "acc_norm_bf16": 0.25},
    "hw3": {"steps": 200, "cells": hw3_cells()},
}


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(numbers: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target = numbers
        for name in parents:
            target = target[name]
        target[last] = value
    return mutate


# One failing variant per check (more for the rules with several parts).
BAD: list[tuple[str, str, Callable[[dict[str, Any]], None]]] = [
    ("nvml_identity", "uuid differs under CUDA_VISIBLE_DEVICES", _set("visible.nvml_uuid", "GPU-2")),
    ("nvml_identity", "found by index, not UUID", _set("direct.source", "NVML (H100, NVML index 0, q)")),
    ("memory_ordering", "reserved above process", _set("reserved_peak_bytes", 1.75 * GIB)),
    ("memory_ordering", "context gap too large",
     lambda n: n.update(nvml_process_peak_bytes=3.5 * GIB, nvml_device_used_peak_bytes=4 * GIB)),
    ("memory_ordering", "1 GiB tensor unseen by NVML", _set("tensor.nvml_process_delta_bytes", 0.5 * GIB)),
    ("sampler_overhead", "sampling 3 % slower", _set("sampling_step_s", [0.0103, 0.0103, 0.0104])),
    ("step_timing", "timer 5 % above events", _set("timer_s", [0.0105] * 10)),
    ("mixed_precision", "bf16 3 % off", _set("bf16.loss_bf16", 3.1)),
    ("mixed_precision", "bf16 weights kept in bf16", _set("bf16.weight_dtypes", ["torch.bfloat16", "torch.float32"])),
    ("mixed_precision", "scale never moved", _set("fp16.scales", [65536.0, 65536.0])),
    ("mixed_precision", "overflowing step applied", _set("fp16.applied_overflow_steps", [1])),
    ("tf32", "only 1.5x faster", _set("ms_on", 2.0)),
    ("tf32", "a deprecation warning", _set("warnings", ["UserWarning: allow_tf32 is deprecated"])),
    ("compile", "recompiled after warm-up", _set("graphs_after", 3)),
    ("compile", "loss differs from eager", _set("loss_compiled", 2.902)),
    ("compile", "compile time inside step time", _set("compile_time_s", 0.005)),
    ("pin_memory", "different losses", _set("losses.pinned", {**CURVE, "20": 2.91})),
    ("pin_memory", "pinned 5 % slower", _set("step_s.pinned", [0.0105, 0.0106])),
    ("jobs_oom", "huge cell never retried", _set("retry_seen", False)),
    ("jobs_oom", "next cell failed", _set("statuses", {"a": "ok", "huge": "oom", "b": "oom"})),
    ("jobs_oom", "two workers on one of two GPUs", _set("gpus_visible", 2)),
    ("mfu", "30 % on an H100", _set("mfu", 0.30)),
    ("determinism", "differ, nothing named", _set("loss_second", 2.91)),
    ("sigkill_resume", "resumed curve differs", _set("resumed", {**CURVE, "30": 2.71})),
    ("sigkill_resume", "started over instead of resuming", _set("resumed_at", [])),
    ("hellaswag_bf16", "agreement 80 %", _set("agreement", 0.80)),
    ("hw3", "a cell failed", lambda n: n["cells"].__setitem__(3, {**n["cells"][3], "status": "oom"})),
    ("hw3", "only 11 cells", lambda n: n["cells"].pop()),
]


def measured(key: str, numbers: dict[str, Any], others: dict[str, Any] | None = None):
    entries = {**(others or {}), key: {"state": "measured", "numbers": numbers}}
    return judge(BY_KEY[key], entries[key], entries)


def test_there_are_fourteen_checks_numbered_in_order():
    assert [c.number for c in CHECKS] == list(range(1, 15)) and set(GOOD) == set(BY_KEY)


@pytest.mark.parametrize("key", list(BY_KEY))
def test_good_numbers_pass(key):
    verdict = measured(key, copy.deepcopy(GOOD[key]))
    assert verdict.outcome == "pass", verdict
    assert verdict.measured and verdict.rule == BY_KEY[key].rule


def test_every_check_has_a_failing_case():
    assert {key for key, _, _ in BAD} == set(BY_KEY)


@pytest.mark.parametrize("key,why,mutate", BAD, ids=[f"{k}-{w}" for k, w, _ in BAD])
def test_bad_numbers_fail(key, why, mutate):
    numbers = copy.deepcopy(GOOD[key])
    mutate(numbers)
    verdict = measured(key, numbers)
    assert verdict.outcome == "fail", (why, verdict)


def test_memory_without_a_process_figure_passes_only_with_the_fallback_named():
    numbers = copy.deepcopy(GOOD["memory_ordering"])
    numbers.update(nvml_process_peak_bytes=None, memory_source="torch.cuda allocator (NVML process figure unavailable)",
                   process_absent_reason="MIG", mig_mode="enabled")
    numbers["tensor"]["nvml_process_delta_bytes"] = None
    verdict = measured("memory_ordering", numbers)
    assert verdict.outcome == "pass" and "no NVML per-process figure" in verdict.note and "MIG" in verdict.note
    numbers["memory_source"] = "NVML process memory"
    assert measured("memory_ordering", numbers).outcome == "fail"


def test_oom_cell_that_succeeds_at_half_batch_passes():
    numbers = {**copy.deepcopy(GOOD["jobs_oom"]), "statuses": {"a": "ok", "huge": "ok", "b": "ok"},
               "oom_micro_batch": 500}
    assert measured("jobs_oom", numbers).outcome == "pass"


def test_mfu_goal_applies_to_h100_h200_only_and_an_unknown_device_skips():
    elsewhere = {**GOOD["mfu"], "mfu": 0.2, "device_name": "NVIDIA A10G"}
    verdict = measured("mfu", elsewhere)
    assert verdict.outcome == "pass" and "H100/H200 only" in verdict.note
    unknown = {**GOOD["mfu"], "mfu": None, "peak_flops_per_s": None, "device_name": "Mystery GPU",
               "matmul_precision": "bf16"}
    verdict = measured("mfu", unknown)
    assert verdict.outcome == "skip" and "no datasheet bf16 peak for Mystery GPU" in verdict.measured
    assert "MFU unknown (achieved 445 TFLOP/s)" in verdict.measured


def test_differing_seeds_pass_when_torch_names_the_kernels():
    numbers = {**GOOD["determinism"], "loss_second": 2.9001, "nondeterministic_ops": ["scatter_add_cuda_kernel"]}
    verdict = measured("determinism", numbers)
    assert verdict.outcome == "pass" and "scatter_add_cuda_kernel" in verdict.note


def test_resume_tolerance_widens_to_the_drift_between_two_uninterrupted_runs():
    resumed = {**CURVE, "30": CURVE["30"] + 4e-5}
    numbers = {**GOOD["sigkill_resume"], "resumed": resumed}
    assert measured("sigkill_resume", numbers).outcome == "fail"
    numbers["reference_again"] = {**CURVE, "30": CURVE["30"] + 3e-5}
    verdict = measured("sigkill_resume", numbers)
    assert verdict.outcome == "pass" and "two uninterrupted runs" in verdict.measured


def test_a_kill_that_came_too_late_fails():
    assert measured("sigkill_resume", {**GOOD["sigkill_resume"], "finished_before_kill": True}).outcome == "fail"


def test_hw3_lists_every_cell_next_to_the_v100_figures():
    verdict = measured("hw3", copy.deepcopy(GOOD["hw3"]))
    assert "3.9-5.7 GB" in verdict.measured and len(verdict.details) == 2 + 12


def test_an_absent_cuda_figure_skips_naming_it():
    numbers = {**GOOD["step_timing"], "event_s": None}
    verdict = measured("step_timing", numbers)
    assert verdict.outcome == "skip" and "event_s" in verdict.measured


def test_recorded_states_other_than_measured():
    verdicts = {v.key: v for v in judge_all({
        "tf32": {"state": "skipped", "reason": "time guard: 3 s left", "seconds": 0.0},
        "compile": {"state": "error", "error": "RuntimeError: inductor failed"},
        "mfu": {"state": "measured", "numbers": {"mfu": "0.4", "achieved_flops_per_s": 1.0,
                                                 "peak_flops_per_s": 2.0, "device_name": "H100"}},
    })}
    assert len(verdicts) == 14
    assert verdicts["tf32"].outcome == "skip" and "time guard" in verdicts["tf32"].measured
    assert verdicts["tf32"].seconds == 0.0 and verdicts["compile"].seconds is None
    assert verdicts["compile"].outcome == "fail" and "inductor failed" in verdicts["compile"].measured
    assert verdicts["mfu"].outcome == "fail" and "could not be judged" in verdicts["mfu"].measured
    assert verdicts["hw3"].outcome == "skip" and verdicts["hw3"].measured == "not recorded"
