"""The fourteen GPU acceptance checks as rules over recorded numbers (issue 22).

The acceptance script records, per check, an entry of plain JSON values::

    {"state": "measured", "numbers": {...}}     # what the check measured
    {"state": "skipped", "reason": "..."}       # not run: no CUDA, data missing, the time guard
    {"state": "error", "error": "..."}          # the measurement itself crashed

:func:`judge_all` turns each entry into a :class:`Verdict`: ``pass``, ``fail`` or ``skip``, the
measured figures in words, and the rule. A number a check needs that is ``None`` (a CUDA-only
figure in a CPU dry run, say) makes that check ``skip`` with the missing names, never a pass.
A judge that meets malformed numbers fails its check; it never stops the others.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any, Callable

GIB = 1024**3
MIB = 1024**2

# Process (NVML) minus allocator-reserved memory: the CUDA context, cuBLAS/cuDNN handles and the
# loaded kernel images, none of which go through torch's caching allocator. About 0.3-1 GiB on
# recent drivers with lazy module loading; up to ~2 GiB with every kernel image loaded eagerly.
CONTEXT_GAP_BYTES = (64 * MIB, 2 * GIB)
ONE_GIB_TOLERANCE = 0.05  # a deliberate 1 GiB tensor: each peak rises by 1 GiB +- 5 %
SAMPLER_MAX_RATIO = 1.01
TIMING_TOLERANCE = 0.03
BF16_LOSS_TOLERANCE = 0.02
TF32_MIN_SPEEDUP = 2.0
COMPILE_LOSS_TOLERANCE = 1e-3
LOSS_EQUAL_TOLERANCE = 1e-5
PIN_MAX_RATIO = 1.02  # "not slower", with 2 % for run-to-run noise
MFU_GOAL = 0.40
MFU_GOAL_DEVICES = ("H100", "H200")
HELLASWAG_MIN_AGREEMENT = 0.90
HW3_CELLS = 12
HW3_V100_MEMORY_GB = (3.9, 5.7)  # the HW3 report's mean GPU memory per run (nvidia-smi, V100)


class Absent(Exception):
    """A number the rule needs is missing (None): the check is skipped, naming what is missing."""


@dataclass(frozen=True)
class Outcome:
    outcome: str  # pass, fail or skip
    measured: str
    note: str = ""
    details: tuple[str, ...] = ()  # extra markdown lines (a per-cell table)


@dataclass(frozen=True)
class Check:
    number: int
    key: str
    title: str
    rule: str
    judge: Callable[[dict[str, Any], dict[str, Any]], Outcome]
    needs_cuda: bool = True


@dataclass(frozen=True)
class Verdict:
    number: int
    key: str
    title: str
    outcome: str
    measured: str
    rule: str
    note: str = ""
    details: tuple[str, ...] = field(default_factory=tuple)
    seconds: float | None = None  # how long the measurement took


# -- small helpers ---------------------------------------------------------------------------


def need(numbers: dict[str, Any], *names: str) -> list[Any]:
    """The values of ``names``; raises :class:`Absent` naming every one that is missing or None."""
    missing = [n for n in names if numbers.get(n) is None]
    if missing:
        raise Absent(", ".join(missing))
    return [numbers[n] for n in names]


def verdict(ok: bool, measured: str, note: str = "", details: tuple[str, ...] = ()) -> Outcome:
    return Outcome("pass" if ok else "fail", measured, note, details)


def gib(value: float | None) -> str:
    return "n/a" if value is None else f"{value / GIB:.3f} GiB"


def ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:.3f} ms"


def median(values: list[float]) -> float:
    if not values:
        raise Absent("no timings")
    return statistics.median(values)


def loss_at(losses: dict[str, Any], step: int) -> float:
    """A logged loss by step; JSON turned the step keys into strings."""
    value = losses.get(str(step), losses.get(step))  # type: ignore[call-overload]
    if value is None:
        raise Absent(f"loss at step {step}")
    return float(value)


def max_curve_gap(a: dict[str, Any], b: dict[str, Any]) -> float:
    """Largest absolute difference of two loss curves over their common steps (inf if they share none
    or one holds a step the other lacks)."""
    if not a or set(a) != set(b):
        return math.inf
    return max(abs(float(a[s]) - float(b[s])) for s in a)


# -- the judges, one per check ---------------------------------------------------------------


def judge_nvml_identity(n: dict[str, Any], _: dict[str, Any]) -> Outcome:
    parts, ok = [], True
    for label in ("direct", "visible"):
        probe = n.get(label)
        if probe is None:
            raise Absent(label)
        torch_uuid, nvml_uuid, source = probe.get("torch_uuid"), probe.get("nvml_uuid"), probe.get("source", "")
        same = torch_uuid is not None and torch_uuid == nvml_uuid and "matched by UUID" in source
        ok &= same
        where = f" (CUDA_VISIBLE_DEVICES={probe['cuda_visible_devices']})" if "cuda_visible_devices" in probe else ""
        parts.append(f"{label}{where}: torch {torch_uuid}, NVML {nvml_uuid}, {'same' if same else 'DIFFERENT'}")
    return verdict(ok, "; ".join(parts))


def judge_memory_ordering(n: dict[str, Any], _: dict[str, Any]) -> Outcome:
    allocated, reserved, device = need(n, "allocated_peak_bytes", "reserved_peak_bytes", "nvml_device_used_peak_bytes")
    process = n.get("nvml_process_peak_bytes")
    tensor = n.get("tensor") or {}
    alloc_delta = need(tensor, "allocated_delta_bytes")[0]
    nvml_delta = tensor.get("nvml_process_delta_bytes")
    nvml_kind = "process"
    if nvml_delta is None or process is None:
        nvml_delta, nvml_kind = need(tensor, "nvml_device_delta_bytes")[0], "device"
    problems = []
    chain = [allocated, reserved] + ([process] if process is not None else []) + [device]
    if any(a > b for a, b in zip(chain, chain[1:])):
        problems.append("ordering broken")
    gap = process - reserved if process is not None else None
    if gap is not None and not CONTEXT_GAP_BYTES[0] <= gap <= CONTEXT_GAP_BYTES[1]:
        problems.append("context gap out of range")
    for name, delta in (("allocator", alloc_delta), (f"NVML {nvml_kind}", nvml_delta)):
        if abs(delta - GIB) > ONE_GIB_TOLERANCE * GIB:
            problems.append(f"1 GiB tensor moved the {name} peak by {gib(delta)}")
    note = ""
    if process is None:
        fallback = n.get("memory_source") or ""
        if "allocator" not in fallback:
            problems.append("no per-process figure and no fallback named")
        note = (f"no NVML per-process figure ({n.get('process_absent_reason') or 'reason not reported'}; "
                f"MIG mode {n.get('mig_mode')}); the cell's memory comes from: {fallback}")
    measured = (f"allocated {gib(allocated)} <= reserved {gib(reserved)} <= NVML process {gib(process)} <= "
                f"NVML device used {gib(device)}; process - reserved = {gib(gap)}; 1 GiB tensor: allocator "
                f"+{gib(alloc_delta)}, NVML {nvml_kind} +{gib(nvml_delta)}")
    if problems:
        note = "; ".join(problems + ([note] if note else []))
    return verdict(not problems, measured, note)


def judge_sampler_overhead(n: dict[str, Any], _: dict[str, Any]) -> Outcome:
    on, off = need(n, "sampling_step_s", "disabled_step_s")
    ratio = median(on) / median(off)
    return verdict(ratio <= SAMPLER_MAX_RATIO,
                   f"step {ms(median(on))} sampling every {n.get('interval_ms', 100)} ms vs {ms(median(off))} with "
                   f"memory_interval_ms = 0 (median of {len(on)} runs each): ratio {ratio:.4f}")


def judge_step_timing(n: dict[str, Any], _: dict[str, Any]) -> Outcome:
    timer, events = need(n, "timer_s", "event_s")
    if len(timer) != len(events) or not timer:
        return verdict(False, f"{len(timer)} step-timer vs {len(events)} CUDA-event times")
    ratio = sum(timer) / sum(events)
    worst = max(abs(t / e - 1) for t, e in zip(timer, events))
    return verdict(abs(ratio - 1) <= TIMING_TOLERANCE,
                   f"steps 10-19: step timer {ms(sum(timer))}, CUDA events {ms(sum(events))} (ratio {ratio:.4f}; "
                   f"worst single step {worst:.1%} apart)")


def judge_mixed_precision(n: dict[str, Any], _: dict[str, Any]) -> Outcome:
    bf16, fp16 = n.get("bf16") or {}, n.get("fp16") or {}
    loss32, loss16, step = need(bf16, "loss_fp32", "loss_bf16", "step")
    weights, states = need(bf16, "weight_dtypes", "optimizer_dtypes")
    scales, overflowed, applied = need(fp16, "scales", "overflow_steps", "applied_overflow_steps")
    problems = []
    rel = abs(loss16 - loss32) / abs(loss32) if loss32 else math.inf
    if not (math.isfinite(loss16) and rel <= BF16_LOSS_TOLERANCE):
        problems.append("bf16 loss not finite or too far from fp32's")
    if set(weights) != {"torch.float32"} or set(states) - {"torch.float32"}:
        problems.append(f"bf16 run keeps weights {weights} and optimizer state {states}")
    if not scales or min(scales) == max(scales):
        problems.append("the fp16 loss scale never moved")
    if not overflowed:
        problems.append("no fp16 step overflowed, so skipping was not exercised")
    if applied:
        problems.append(f"overflowing steps {applied} changed the weights")
    final = fp16.get("final_loss")
    if final is None or not math.isfinite(final):
        problems.append("fp16 final loss not finite")
    measured = (f"bf16 loss {loss16:.5f} vs fp32 {loss32:.5f} at step {step} ({rel:.2%} apart); weights "
                f"{', '.join(weights)}, optimizer state {', '.join(states) or 'none'}; fp16 (scaler started at "
                f"{fp16.get('init_scale', 65536.0):g} on purpose): scale "
                f"{_scale_path(scales)}, {len(overflowed)} overflowing step(s) skipped, {len(applied)} applied, "
                f"final loss {final}")
    return verdict(not problems, measured, "; ".join(problems))


def _scale_path(scales: list[float]) -> str:
    if not scales:
        return "n/a"
    return f"{scales[0]:g} -> {scales[-1]:g} (min {min(scales):g}, max {max(scales):g})"


def judge_tf32(n: dict[str, Any], _: dict[str, Any]) -> Outcome:
    off, on = need(n, "ms_off", "ms_on")
    warnings = n.get("warnings") or []
    speedup = off / on
    note = "; ".join(warnings)
    return verdict(speedup >= TF32_MIN_SPEEDUP and not warnings,
                   f"{n.get('size', 4096)}^2 fp32 matmul: {off:.3f} ms without TF32, {on:.3f} ms with "
                   f"({speedup:.2f}x); {len(warnings)} warning(s); fp32_precision reads "
                   f"{n.get('fp32_precision')!r} with tf32 on", note)


def judge_compile(n: dict[str, Any], _: dict[str, Any]) -> Outcome:
    compile_s, per_step, before, after = need(n, "compile_time_s", "time_per_step_s", "graphs_before", "graphs_after")
    compiled, eager, step = need(n, "loss_compiled", "loss_eager", "step")
    recompiles = after - before
    gap = abs(compiled - eager)
    problems = []
    if not compile_s > per_step:
        problems.append("compile time not kept apart from step time")
    if recompiles:
        problems.append(f"{recompiles} graph(s) compiled after the warm-up")
    if gap > COMPILE_LOSS_TOLERANCE:
        problems.append("compiled loss differs from eager")
    return verdict(not problems,
                   f"compile {compile_s:.2f} s (warm-up, outside the clock), {ms(per_step)} per step; "
                   f"{recompiles} recompilation(s) over {n.get('steps', 30)} steps; loss at step {step}: "
                   f"compiled {compiled:.6f}, eager {eager:.6f} (|diff| {gap:.2e})", "; ".join(problems))


def judge_pin_memory(n: dict[str, Any], _: dict[str, Any]) -> Outcome:
    losses, times = need(n, "losses", "step_s")
    pinned, unpinned, again = (losses.get(k) or {} for k in ("pinned", "unpinned", "unpinned_again"))
    gap, noise = max_curve_gap(pinned, unpinned), max_curve_gap(unpinned, again)
    tolerance = max(LOSS_EQUAL_TOLERANCE, 2 * noise) if math.isfinite(noise) else LOSS_EQUAL_TOLERANCE
    ratio = median(times.get("pinned") or []) / median(times.get("unpinned") or [])
    return verdict(gap <= tolerance and ratio <= PIN_MAX_RATIO,
                   f"max |loss diff| pinned vs not {gap:.2e} over {len(pinned)} logged steps (tolerance "
                   f"{tolerance:.1e}; unpinned twice: {noise:.2e}); step time pinned / not = {ratio:.4f}")


def judge_jobs_oom(n: dict[str, Any], _: dict[str, Any]) -> Outcome:
    gpus, workers, statuses = need(n, "gpus_visible", "workers", "statuses")
    oom_cell = n.get("oom_cell")
    problems = []
    expected = min(2, gpus)
    if len(set(workers)) != expected or not all(w.startswith("GPU ") for w in workers):
        problems.append(f"expected {expected} worker(s) each on its own GPU, saw {workers}")
    sources = n.get("nvml_sources") or {}
    if any("matched by UUID" not in (s or "") for s in sources.values()):
        problems.append("a worker's NVML figure was not matched to its own GPU by UUID")
    if oom_cell is None:
        raise Absent("oom_cell")
    oom_status = statuses.get(oom_cell)
    halved = n.get("oom_micro_batch") == n.get("oom_batch", 0) // 2
    if not (n.get("retry_seen") and (oom_status == "oom" or (oom_status == "ok" and halved))):
        problems.append(f"the huge-batch cell ended {oom_status!r} (retry at half batch seen: {n.get('retry_seen')})")
    others = {name: s for name, s in statuses.items() if name != oom_cell}
    if not others or any(s != "ok" for s in others.values()):
        problems.append(f"other cells: {others}")
    if not n.get("cell_after_oom"):
        problems.append("no cell was scheduled after the out-of-memory one")
    return verdict(not problems,
                   f"{gpus} GPU(s) visible, workers on {sorted(set(workers))}; huge-batch cell {oom_status} "
                   f"(batch {n.get('oom_batch')}, retried at half: {n.get('retry_seen')}); others {others}",
                   "; ".join(problems))


def judge_mfu(n: dict[str, Any], _: dict[str, Any]) -> Outcome:
    name = n.get("device_name") or ""
    if n.get("peak_flops_per_s") is None:
        achieved = n.get("achieved_flops_per_s")
        achieved_text = f"{achieved / 1e12:.3g} TFLOP/s" if achieved else "n/a"
        return Outcome("skip", f"no datasheet {n.get('matmul_precision') or ''} peak for {name or 'this device'} "
                               f"in bench/timing.py: MFU unknown (achieved {achieved_text})")
    mfu, achieved, peak = need(n, "mfu", "achieved_flops_per_s", "peak_flops_per_s")
    measured = (f"MFU {mfu:.1%}: {achieved / 1e12:.1f} TFLOP/s achieved of {peak / 1e12:.1f} "
                f"({n.get('peak_flops_source')}); {n.get('tokens_per_s') or 0:,.0f} tokens/s")
    if any(d in name for d in MFU_GOAL_DEVICES):
        return verdict(mfu >= MFU_GOAL, measured)
    return verdict(True, measured, f"the {MFU_GOAL:.0%} goal applies to H100/H200 only")


def judge_determinism(n: dict[str, Any], _: dict[str, Any]) -> Outcome:
    first, second, step = need(n, "loss_first", "loss_second", "step")
    kernels = n.get("nondeterministic_ops") or []
    gap = abs(first - second)
    measured = f"loss at step {step}: {first:.8f} and {second:.8f} (|diff| {gap:.2e})"
    named = f"non-deterministic kernels torch names: {', '.join(kernels)}" if kernels else ""
    if gap <= LOSS_EQUAL_TOLERANCE:
        return verdict(True, measured, named)
    return verdict(bool(kernels), measured, named or "losses differ and no non-deterministic kernel was named")


def judge_sigkill_resume(n: dict[str, Any], _: dict[str, Any]) -> Outcome:
    reference, again, resumed, resumed_at = need(n, "reference", "reference_again", "resumed", "resumed_at")
    if n.get("finished_before_kill"):
        return verdict(False, "the cell finished before it could be killed", "give it more steps")
    gap, drift = max_curve_gap(reference, resumed), max_curve_gap(reference, again)
    tolerance = max(LOSS_EQUAL_TOLERANCE, 2 * drift) if math.isfinite(drift) else LOSS_EQUAL_TOLERANCE
    return verdict(bool(resumed_at) and gap <= tolerance,
                   f"killed (SIGKILL) after step {n.get('killed_at_step')}, resumed at {resumed_at}; max |loss "
                   f"diff| vs uninterrupted {gap:.2e} over {len(reference)} logged points (tolerance "
                   f"{tolerance:.1e}: max(1e-5, 2x the {drift:.1e} between two uninterrupted runs))")


def judge_hellaswag(n: dict[str, Any], _: dict[str, Any]) -> Outcome:
    items, agreement = need(n, "items", "agreement")
    return verdict(items > 0 and agreement >= HELLASWAG_MIN_AGREEMENT,
                   f"{items} items: bf16 picks the fp32 ending on {agreement:.1%}; acc bf16 {n.get('acc_bf16')} "
                   f"vs fp32 {n.get('acc_fp32')}, acc_norm {n.get('acc_norm_bf16')} vs {n.get('acc_norm_fp32')}")


def judge_hw3(n: dict[str, Any], _: dict[str, Any]) -> Outcome:
    cells = need(n, "cells")[0]
    ok = [c for c in cells if c.get("status") == "ok"]
    measured_fully = [c for c in ok if c.get("time_per_step_s") and c.get("tokens_per_s") and c.get("memory_bytes")]
    details = ["| cell | status | step time | tokens/s | GPU memory mean / peak (source) |", "|---|---|---|---|---|"]
    for c in cells:
        details.append(f"| {c.get('name')} | {c.get('status')} | {ms(c.get('time_per_step_s'))} | "
                       f"{c.get('tokens_per_s') or 0:,.0f} | {gib(c.get('memory_bytes'))} / "
                       f"{gib(c.get('memory_peak_bytes'))} ({c.get('memory_source')}) |")
    means = [c["memory_bytes"] / 1e9 for c in measured_fully]
    span = f"{min(means):.2f}-{max(means):.2f} GB" if means else "n/a"
    measured = (f"{len(ok)}/{len(cells)} cells ok at {n.get('steps')} steps; mean GPU memory {span} per cell "
                f"(HW3 report, V100 via nvidia-smi: {HW3_V100_MEMORY_GB[0]}-{HW3_V100_MEMORY_GB[1]} GB)")
    complete = len(cells) == HW3_CELLS and len(measured_fully) == HW3_CELLS
    return verdict(complete, measured, "" if complete else "not every cell finished with its figures",
                   tuple(details))


CHECKS: list[Check] = [
    Check(1, "nvml_identity", "NVML identity",
          "NVML's UUID for the probe's device equals torch's, also under CUDA_VISIBLE_DEVICES", judge_nvml_identity),
    Check(2, "memory_ordering", "Memory ordering (gpt2-tiny cell)",
          f"allocator peak <= reserved peak <= NVML process peak <= NVML device used; process - reserved in "
          f"[{CONTEXT_GAP_BYTES[0] // MIB} MiB, {CONTEXT_GAP_BYTES[1] // GIB} GiB] (the CUDA context); a 1 GiB "
          f"tensor raises the allocator and NVML peaks by 1 GiB +-{ONE_GIB_TOLERANCE:.0%}; a missing per-process "
          "figure is reported with the fallback used", judge_memory_ordering),
    Check(3, "sampler_overhead", "Memory sampler overhead",
          f"step time sampling at the default interval / with memory_interval_ms = 0 <= {SAMPLER_MAX_RATIO} "
          "(per run: mean step time after step 20; then the median over interleaved runs)",
          judge_sampler_overhead),
    Check(4, "step_timing", "Step timer vs CUDA events",
          f"steps 10-19: the step timer's total within {TIMING_TOLERANCE:.0%} of CUDA events'", judge_step_timing),
    Check(5, "mixed_precision", "bf16 and fp16",
          f"bf16 loss finite and within {BF16_LOSS_TOLERANCE:.0%} of fp32's at step 50, weights and optimizer state "
          "fp32; fp16: the GradScaler's scale moves and no overflowing step changes the weights",
          judge_mixed_precision),
    Check(6, "tf32", "TF32",
          f"4096^2 fp32 matmul >= {TF32_MIN_SPEEDUP:g}x faster with bench's tf32 = true than false; no warning",
          judge_tf32),
    Check(7, "compile", "torch.compile",
          f"compile time recorded apart from step time; no recompilation over 30 steps after the warm-up; loss "
          f"equal to eager within {COMPILE_LOSS_TOLERANCE:g} at step 20", judge_compile),
    Check(8, "pin_memory", "pin_memory",
          f"pin_memory = true gives the losses of false (within max({LOSS_EQUAL_TOLERANCE:g}, 2x the unpinned "
          f"run-to-run difference)); step time pinned / not <= {PIN_MAX_RATIO}", judge_pin_memory),
    Check(9, "jobs_oom", "--jobs 2 and out-of-memory",
          "each worker on its own GPU (NVML matched by UUID); a huge-batch cell ends oom after the oom_retry "
          "at half batch (or succeeds at half) and every other cell, one after it, is ok", judge_jobs_oom),
    Check(10, "mfu", "MFU (gpt2-tiny, seq 1024, bf16 + compile)",
          f"MFU reported against the device's datasheet peak; >= {MFU_GOAL:.0%} on H100/H200", judge_mfu),
    Check(11, "determinism", "Same seed twice",
          f"losses equal within {LOSS_EQUAL_TOLERANCE:g} at step 20, or the non-deterministic kernels are named",
          judge_determinism),
    Check(12, "sigkill_resume", "SIGKILL and resume",
          "a `bench run` killed mid-cell and rerun resumes, and its curve equals the uninterrupted one within "
          f"max({LOSS_EQUAL_TOLERANCE:g}, 2x the difference between two uninterrupted runs)", judge_sigkill_resume),
    Check(13, "hellaswag_bf16", "HellaSwag under bf16 (lm-eval)",
          f"100 items: bf16's chosen ending agrees with fp32's on >= {HELLASWAG_MIN_AGREEMENT:.0%}", judge_hellaswag),
    Check(14, "hw3", "hw3 matrix at 200 steps per cell",
          f"all {HW3_CELLS} cells ok with step time, tokens/s and GPU memory per cell, shown next to the HW3 "
          "report's V100 figures", judge_hw3),
]


def judge(check: Check, entry: dict[str, Any] | None, checks: dict[str, Any]) -> Verdict:
    """One check's verdict from its recorded entry; never raises."""
    def make(outcome: Outcome) -> Verdict:
        return Verdict(check.number, check.key, check.title, outcome.outcome, outcome.measured, check.rule,
                       outcome.note, outcome.details, (entry or {}).get("seconds"))

    if entry is None:
        return make(Outcome("skip", "not recorded"))
    state = entry.get("state")
    if state == "skipped":
        return make(Outcome("skip", entry.get("reason") or "skipped"))
    if state == "error":
        return make(Outcome("fail", f"the measurement crashed: {entry.get('error')}"))
    try:
        return make(check.judge(entry.get("numbers") or {}, checks))
    except Absent as missing:
        return make(Outcome("skip", f"absent: {missing}", "a CUDA-only figure, or the measurement stopped early"))
    except Exception as exc:  # noqa: BLE001 - malformed numbers fail this check only
        return make(Outcome("fail", f"the recorded numbers could not be judged: {type(exc).__name__}: {exc}"))


def judge_all(checks: dict[str, Any]) -> list[Verdict]:
    """Verdicts for all fourteen checks, in order, from ``{check key: recorded entry}``."""
    return [judge(check, checks.get(check.key), checks) for check in CHECKS]
