"""GPU acceptance: bench's whole CUDA path checked in one command (issue 22), in under 8 minutes
on one H100/H200.

    python benchmarks/gpu_acceptance.py --out benchmarks/results/gpu_acceptance.md

Fourteen checks (NVML identity, memory ordering, sampler overhead, step timer vs CUDA events,
bf16/fp16, TF32, torch.compile, pin_memory, --jobs 2 with an out-of-memory cell, MFU, same seed
twice, SIGKILL and resume, HellaSwag under bf16, the hw3 matrix at 200 steps) each record plain
numbers (``gpu_measure.py``, real bench code paths); ``bench.acceptance`` turns them into a
pass / fail / skip line with the measured figures and the rule, and writes the markdown report
(plus ``<out>.json``, the recorded numbers, which ``--judge`` turns into a report again).

* One check crashing records a failing line with its error; the others still run.
* A time guard (``--budget-s``, default 470) skips a check when less time is left than it
  usually takes on an H100, with a line saying so; subprocesses get timeouts inside the budget.
* Without CUDA the script says which checks need it, writes a report of skips and exits 0.
* ``--cpu-dry-run`` runs every measurement on the CPU with tiny sizes (CUDA-only figures
  recorded as absent), so the measurement code itself is exercised where no GPU is at hand.
* Data: HellaSwag and the hw3 matrix read ``BENCH_DATA_DIR`` (hellaswag/, tinyshakespeare/,
  wikitext-2/) and the GPT-2 BPE files (``TIKTOKEN_CACHE_DIR``); without them those checks skip.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "outputs" / "gpu_acceptance" / "report.md"
BUDGET_S = 470.0
DRY_BUDGET_S = 1800.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"report path (default {DEFAULT_OUT})")
    parser.add_argument("--budget-s", type=float, help=f"overall time guard (default {BUDGET_S:g}; dry run "
                                                       f"{DRY_BUDGET_S:g})")
    parser.add_argument("--only", help="comma-separated check numbers or keys to run (default: all 14)")
    parser.add_argument("--cpu-dry-run", action="store_true",
                        help="run every measurement on the CPU with tiny sizes (exercises the code, not the GPU)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder of the runs")
    parser.add_argument("--judge", type=Path, metavar="JSON", help="write the report from recorded numbers and exit")
    parser.add_argument("--child", choices=["identity", "tf32"], help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def selected(only: str | None) -> set[str] | None:
    from bench.acceptance.rules import CHECKS

    if not only:
        return None
    wanted = {part.strip() for part in only.split(",") if part.strip()}
    keys = {c.key for c in CHECKS if c.key in wanted or str(c.number) in wanted}
    unknown = wanted - {c.key for c in CHECKS} - {str(c.number) for c in CHECKS}
    if unknown:
        raise SystemExit(f"gpu_acceptance: unknown check(s) {sorted(unknown)}; use 1-14 or a key such as tf32")
    return keys


def environment(cuda: bool, budget: float) -> dict[str, Any]:
    import torch

    env: dict[str, Any] = {
        "torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
        "host": f"{platform.node()} ({platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()})",
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"), "budget_s": budget,
        "device": torch.cuda.get_device_name(0) if cuda else "none (no CUDA device)",
        "gpus": torch.cuda.device_count() if cuda else 0, "driver": None,
    }
    if cuda:
        try:
            from bench.memory import nvml_module
            nvml = nvml_module()
            nvml.nvmlInit()
            try:
                driver = nvml.nvmlSystemGetDriverVersion()
                env["driver"] = driver.decode() if isinstance(driver, bytes) else str(driver)
            finally:
                nvml.nvmlShutdown()
        except Exception as exc:  # noqa: BLE001 - the report says why the driver is unknown
            env["driver"] = f"unknown (NVML: {type(exc).__name__}: {exc})"
    return env


def write_report(out: Path, env: dict[str, Any], recorded: dict[str, Any], *, dry: bool, notes: list[str]) -> None:
    from bench.acceptance import judge_all, render_report

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_report(env, judge_all(recorded), dry_run=dry, notes=notes))
    payload = {"environment": env, "dry_run": dry, "notes": notes, "checks": recorded}
    out.with_suffix(".json").write_text(json.dumps(payload, indent=1, sort_keys=True, default=str) + "\n")


def run_checks(ctx: Any, only: set[str] | None, recorded: dict[str, Any], save: Any) -> None:
    """Each check in order, isolated: a crash becomes that check's error entry; saved after each."""
    import gpu_measure as gm

    from bench.acceptance.rules import CHECKS, judge

    for check in CHECKS:
        if only is not None and check.key not in only:
            recorded[check.key] = {"state": "skipped", "reason": "not selected (--only)"}
            continue
        if ctx.dry and check.key in gm.SKIPPED_IN_DRY_RUN:
            recorded[check.key] = {"state": "skipped", "reason": "needs NVML and a GPU even in a dry run"}
            continue
        estimate = 0.0 if ctx.dry else gm.ESTIMATE_S[check.key]
        if ctx.left() < estimate:
            recorded[check.key] = {"state": "skipped", "reason": f"time guard: {max(ctx.left(), 0):.0f} s left of "
                                                                 f"the budget, this check takes about {estimate:.0f} s"}
            ctx.say(f"[{check.number:2d}/14] {check.title}: skipped by the time guard")
            continue
        ctx.say(f"[{check.number:2d}/14] {check.title} ...")
        started = time.monotonic()
        try:
            entry: dict[str, Any] = {"state": "measured", "numbers": gm.MEASUREMENTS[check.key](ctx)}
        except gm.Skip as exc:
            entry = {"state": "skipped", "reason": str(exc)}
        except gm.TimeGuard:
            entry = {"state": "skipped", "reason": "stopped by the time guard: the budget ran out during this check"}
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - one check's crash must not stop the others
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            entry = {"state": "error", "error": f"{type(exc).__name__}: {first}",
                     "traceback": traceback.format_exc()[-2000:]}
        entry["seconds"] = round(time.monotonic() - started, 1)
        recorded[check.key] = entry
        verdict = judge(check, entry, recorded)
        ctx.say(f"[{check.number:2d}/14] {check.title}: {verdict.outcome.upper()} ({entry['seconds']} s): "
                f"{verdict.measured}{' — ' + verdict.note if verdict.note else ''}")
        gm.release(ctx)
        save()


@contextlib.contextmanager
def hard_deadline(seconds: float) -> Iterator[None]:
    """Raise :class:`gpu_measure.TimeGuard` in the main thread once ``seconds`` have passed, so that a
    check running long is cut off where the per-check estimates did not foresee it (Unix only)."""
    import gpu_measure as gm

    if not hasattr(signal, "setitimer"):
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise gm.TimeGuard()

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def say(line: str) -> None:
    print(line, flush=True)


def child(kind: str) -> int:
    """A measurement that needs a fresh process; prints its numbers as one JSON line."""
    import torch
    from gpu_measure import identity_probe, tf32_numbers

    numbers = identity_probe(0) if kind == "identity" else tf32_numbers(torch.device("cuda", 0))
    print(json.dumps(numbers))
    return 0


def main(argv: list[str] | None = None) -> int:
    began = time.monotonic()
    args = parse_args(argv)
    if args.child:
        return child(args.child)
    if args.judge:
        payload = json.loads(args.judge.read_text())
        write_report(args.out, payload["environment"], payload["checks"], dry=payload.get("dry_run", False),
                     notes=payload.get("notes", []))
        say(f"report: {args.out}")
        return 0

    import torch

    from bench.acceptance.rules import CHECKS

    only = selected(args.only)
    cuda = torch.cuda.is_available()
    dry = args.cpu_dry_run
    budget = args.budget_s or (DRY_BUDGET_S if dry else BUDGET_S)
    env = environment(cuda and not dry, budget)
    if dry:
        env["device"] = "CPU (--cpu-dry-run)"
    notes: list[str] = []
    recorded: dict[str, Any] = {}

    def save() -> None:
        env["wall_s"] = round(time.monotonic() - began, 1)
        write_report(args.out, env, recorded, dry=dry, notes=notes)

    if not cuda and not dry:
        needing = [f"{c.number}. {c.title}" for c in CHECKS if c.needs_cuda]
        say(f"No CUDA device here: {len(needing)} of {len(CHECKS)} checks need one and are skipped:")
        for line in needing:
            say(f"  {line}")
        for check in CHECKS:
            recorded[check.key] = ({"state": "skipped", "reason": "needs CUDA; no CUDA device here"}
                                   if check.needs_cuda else {"state": "skipped", "reason": "nothing to run"})
        notes.append("No CUDA device was available. Every check is about bench's CUDA path (their CPU "
                     "counterparts are in the test suite), so none ran. Run this script on a GPU machine; "
                     "`--cpu-dry-run` exercises the measurement code on the CPU.")
        save()
        say(f"report: {args.out}")
        return 0

    import gpu_measure as gm

    work = gm.tmp_root()
    device = torch.device("cpu") if dry else torch.device("cuda", 0)
    if dry:
        torch.set_num_threads(1)
        notes.append("CPU dry run: tiny models and runs; CUDA-only figures (allocator, NVML, CUDA events, TF32) are "
                     "absent, so their checks skip. The pass/fail lines judge the code path, not a GPU.")
    ctx = gm.Context(device=device, dry=dry, work=work, deadline=began + budget, say=say)
    try:
        with hard_deadline(ctx.left()):
            run_checks(ctx, only, recorded, save)
    except gm.TimeGuard:  # between two checks: the entries recorded so far stand, the rest are skipped
        for check in CHECKS:
            recorded.setdefault(check.key, {"state": "skipped", "reason": "time guard: the budget ran out"})
    except KeyboardInterrupt:
        notes.append("interrupted (Ctrl-C): the checks after the last recorded one did not run")
        save()
        say(f"interrupted; partial report: {args.out}")
        return 130
    finally:
        if args.keep:
            say(f"runs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    save()
    from bench.acceptance.report import summary_line
    from bench.acceptance.rules import judge_all
    say(f"{summary_line(judge_all(recorded))} in {env['wall_s']} s; report: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
