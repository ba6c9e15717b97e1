"""The measurement layer of ``gpu_acceptance.py``: one function per check, each returning a plain
dict of recorded numbers (see :mod:`bench.acceptance.rules` for what each check needs).

Every training run goes through bench's real paths: ``bench run`` (in this process through
``bench.cli.main``, or as a subprocess where a kill, worker processes or an out-of-memory must not
touch this process). Instrumentation wraps the real objects and adds nothing to what they compute:
CUDA events around the step timer's window, a GradScaler that notes each step's scale, a
``train_step`` that reads torch.compile's graph counter. One fault is injected on purpose: the fp16
run's scaler starts at 2^32, so its first steps overflow and the skipping of those steps is seen.

With ``ctx.dry`` (``--cpu-dry-run``) the same code runs on the CPU with tiny sizes; figures that
only CUDA has (allocator peaks, NVML, CUDA events, TF32) are recorded as None.
"""

from __future__ import annotations

import contextlib
import gc
import io
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

GIB = 1024**3
ROOT = Path(__file__).resolve().parents[1]
BENCH = [sys.executable, "-m", "bench.cli"]


class Skip(Exception):
    """The check cannot run here (data missing, one GPU where it needs more...): recorded as skipped."""


class TimeGuard(BaseException):
    """The overall budget ran out in the middle of a check (raised by a SIGALRM handler). Not an
    ``Exception``, so bench's own per-cell error handling lets it through to the script."""


class Refused(RuntimeError):
    """`bench run` refused the matrix before training (exit 2: missing data, bad settings)."""


STOPPED_BY_SIGNAL = (128 + signal.SIGINT, 128 + signal.SIGTERM)  # `bench run`'s exit after a graceful stop


@dataclass
class Sizes:
    """Model and run sizes: realistic on a GPU, tiny for the CPU dry run."""

    n_layer: int
    n_embd: int
    n_head: int
    seq_len: int
    batch_size: int
    vocab_size: int
    steps: int  # short training runs
    rounds: int  # interleaved repeats of timed comparisons
    mfu: dict[str, Any]
    kill: dict[str, int]  # SIGKILL check: total steps, checkpoint interval, kill after this step
    hellaswag: dict[str, int]
    hw3: dict[str, Any]


GPU_SIZES = Sizes(n_layer=4, n_embd=256, n_head=4, seq_len=256, batch_size=32, vocab_size=4096, steps=100,
                  rounds=3,
                  mfu={"n_layer": 6, "n_embd": 384, "n_head": 6, "seq_len": 1024, "batch_size": 16,
                       "vocab_size": 50257, "max_steps": 60},
                  kill={"steps": 600, "every": 50, "after": 100},
                  hellaswag={"steps": 300, "items": 100},
                  hw3={"steps": 200, "filter": None, "max_chars": 0})
DRY_SIZES = Sizes(n_layer=1, n_embd=32, n_head=2, seq_len=32, batch_size=8, vocab_size=128, steps=30, rounds=2,
                  mfu={"n_layer": 1, "n_embd": 32, "n_head": 2, "seq_len": 64, "batch_size": 4,
                       "vocab_size": 256, "max_steps": 20},
                  kill={"steps": 400, "every": 20, "after": 20},
                  hellaswag={"steps": 20, "items": 8},
                  hw3={"steps": 2, "filter": "optimizer=sgd", "max_chars": 20000})


@dataclass
class Context:
    device: torch.device
    dry: bool
    work: Path
    deadline: float  # time.monotonic() by which everything must be done
    say: Callable[[str], None]
    sizes: Sizes = field(init=False)
    runs: int = 0

    def __post_init__(self) -> None:
        self.sizes = DRY_SIZES if self.dry else GPU_SIZES

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def timeout(self, cap: float) -> float:
        """A subprocess's timeout: at most ``cap``, never past the deadline."""
        return max(5.0, min(cap, self.left() - 5.0))

    def folder(self, name: str) -> Path:
        self.runs += 1
        path = self.work / f"{self.runs:02d}-{name}"
        path.mkdir(parents=True)
        return path


# -- running cells ---------------------------------------------------------------------------


@dataclass
class Trained:
    summary: dict[str, Any]
    rows: list[dict[str, Any]]
    path: Path  # the cell folder
    log: str  # what `bench run` printed


def matrix_text(name: str, settings: dict[str, Any], axes: dict[str, list] | None = None,
                include: list[dict[str, Any]] | None = None) -> str:
    """A matrix file; JSON literals (strings, numbers, booleans, lists) are valid TOML values."""
    lines = [f'name = "{name}"', "[defaults]"] + [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
    lines += ["[matrix]"] + [f"{k} = {json.dumps(v)}" for k, v in (axes or {"seed": [0]}).items()]
    if include:
        tables = ", ".join("{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in e.items()) + " }" for e in include)
        lines.append(f"include = [{tables}]")
    return "\n".join(lines) + "\n"


def cell_settings(ctx: Context, **overrides: Any) -> dict[str, Any]:
    """A gpt2-tiny cell on the synthetic Markov source (learnable, no files), AdamW."""
    s = ctx.sizes
    settings: dict[str, Any] = {
        "model": "gpt2-tiny", "optimizer": "adamw", "lr": 1e-3, "dataset": "synthetic",
        "vocab_size": s.vocab_size, "train_tokens": 400_000 if not ctx.dry else 20_000,
        "valid_tokens": 4 * s.seq_len * s.batch_size + 1, "test_tokens": 4 * s.seq_len * s.batch_size + 1,
        "n_layer": s.n_layer, "n_embd": s.n_embd, "n_head": s.n_head, "n_positions": s.seq_len,
        "seq_len": s.seq_len, "batch_size": s.batch_size, "max_steps": s.steps, "steps_per_epoch": s.steps,
        "log_every": 10, "checkpoint": False,
    }
    settings.update(overrides)
    return settings


def train(ctx: Context, name: str, settings: dict[str, Any]) -> Trained:
    """``bench run`` of a one-cell matrix in this process, its printed lines captured."""
    from bench.cli import main
    from bench.store import ResultStore

    folder = ctx.folder(name)
    matrix = folder / "m.toml"
    matrix.write_text(matrix_text(name, settings))
    printed = io.StringIO()
    with contextlib.redirect_stderr(printed), contextlib.redirect_stdout(printed):
        code = main(["run", str(matrix), "--device", ctx.device.type, "--outputs", str(folder / "out")])
    if code in STOPPED_BY_SIGNAL:  # Ctrl-C reached the in-process run: stop the script, not just this run
        raise KeyboardInterrupt
    store = ResultStore(folder / "out", name)
    records = store.records()
    summary = records[0].read_summary() if records else None
    if code != 0 or summary is None or summary.get("status") not in ("ok", "paused"):
        tail = " | ".join(printed.getvalue().strip().splitlines()[-3:])
        raise (Refused if code == 2 else RuntimeError)(f"bench run of {name} ended with exit code {code}: {tail}")
    return Trained(summary, records[0].read_metrics(), records[0].path, printed.getvalue())


def curve(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Logged train losses by step, and each validation as ``val@step``."""
    points = {str(r["step"]): float(r["train_loss"]) for r in rows if r.get("kind") == "log"}
    points.update({f"val@{r['step']}": float(r["val_loss"]) for r in rows if r.get("val_loss") is not None})
    return points


def loss_at(rows: list[dict[str, Any]], step: int) -> float:
    return next(float(r["train_loss"]) for r in rows if r.get("kind") == "log" and r["step"] == step)


@contextlib.contextmanager
def replaced(owner: Any, name: str, value: Any) -> Iterator[None]:
    """``owner.name = value`` for the block (instrumentation around a real object)."""
    original = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, original)


@contextlib.contextmanager
def log_clock() -> Iterator[list[float]]:
    """``perf_counter()`` right after each of the loop's loss reads (every ``log_every`` steps; each
    read synchronises the device, so a stamp marks the end of the GPU work of the steps before it)."""
    import bench.training.loop as loop_module

    stamps: list[float] = []
    real = loop_module.log_window

    def timed(run: Any, done: int, lr: float) -> None:
        real(run, done, lr)
        stamps.append(time.perf_counter())

    with replaced(loop_module, "log_window", timed):
        yield stamps


def steady_step_s(stamps: list[float], log_every: int) -> float:
    """Mean step time after the first two logging windows (warm-up, and steps 10-19 with the step
    timer's extra synchronisations), so a sampler tick counts wherever it lands."""
    if len(stamps) < 4:
        raise RuntimeError(f"only {len(stamps)} loss reads: too few steps to time")
    return (stamps[-1] - stamps[1]) / ((len(stamps) - 2) * log_every)


def timed_train(ctx: Context, name: str, settings: dict[str, Any]) -> tuple[Trained, float]:
    with log_clock() as stamps:
        trained = train(ctx, name, settings)
    return trained, steady_step_s(stamps, settings["log_every"])


def run_bench(args: list[str], timeout: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``bench ARGS`` as a subprocess (this interpreter), output captured; raises on timeout."""
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(BENCH + args, capture_output=True, text=True, timeout=timeout, env=environment, cwd=ROOT)


def release(ctx: Context) -> None:
    """Give cached device memory back, so the next run (or a subprocess) starts with the whole GPU."""
    gc.collect()
    if ctx.cuda:
        torch.cuda.empty_cache()


# -- 1. NVML identity --------------------------------------------------------------------------


def identity_probe(index: int = 0) -> dict[str, Any]:
    """bench's NVML probe for torch's device ``index``: both UUIDs and how the probe found the board."""
    from bench import memory

    nvml = memory.nvml_module()
    torch_uuid = memory._torch_uuid(index)
    probe = memory.NvmlProbe(nvml, index=index, uuid=torch_uuid)
    try:
        raw = nvml.nvmlDeviceGetUUID(probe.handle)
        return {"torch_uuid": torch_uuid, "nvml_uuid": raw.decode() if isinstance(raw, bytes) else str(raw),
                "source": probe.source, "nvml_index": int(nvml.nvmlDeviceGetIndex(probe.handle))}
    finally:
        probe.close()


def measure_nvml_identity(ctx: Context) -> dict[str, Any]:
    direct = identity_probe(0)
    # With several GPUs the last one becomes cuda:0 (NVML still calls it N-1): only the UUID links
    # them. With one GPU, name it by its UUID, the other form CUDA_VISIBLE_DEVICES takes.
    count = torch.cuda.device_count()
    visible = str(count - 1) if count > 1 else str(direct["torch_uuid"])
    done = subprocess.run([sys.executable, str(Path(__file__).with_name("gpu_acceptance.py")), "--child", "identity"],
                          capture_output=True, text=True, timeout=ctx.timeout(120), cwd=ROOT,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": visible})
    if done.returncode != 0:
        raise RuntimeError(f"identity probe under CUDA_VISIBLE_DEVICES={visible} failed: {done.stderr.strip()[-300:]}")
    child = json.loads(done.stdout.strip().splitlines()[-1])
    return {"direct": direct, "visible": {**child, "cuda_visible_devices": visible}}


# -- 2. memory ordering ------------------------------------------------------------------------


def mig_mode() -> str | None:
    if not torch.cuda.is_available():
        return None
    try:
        from bench import memory
        nvml = memory.nvml_module()
        nvml.nvmlInit()
        try:
            current, _ = nvml.nvmlDeviceGetMigMode(nvml.nvmlDeviceGetHandleByIndex(0))
            return "enabled" if current else "disabled"
        finally:
            nvml.nvmlShutdown()
    except Exception as exc:  # noqa: BLE001 - boards without MIG answer "not supported"
        return f"unknown ({type(exc).__name__})"


def sampled_memory(device: torch.device, seconds: float = 0.2) -> dict[str, Any]:
    """bench's sampler (10 ms interval) for ``seconds`` while nothing else runs: the cell-memory figures."""
    from bench import memory

    sampler = memory.start_sampling(device, interval_ms=10)
    time.sleep(seconds)
    return memory.run_memory(device, sampler.stop())


def one_gib_tensor(ctx: Context) -> dict[str, Any]:
    """How much a deliberate 1 GiB tensor moves the allocator and NVML peaks (CUDA only)."""
    if not ctx.cuda:
        return {"allocated_delta_bytes": None, "nvml_process_delta_bytes": None, "nvml_device_delta_bytes": None}
    release(ctx)
    torch.cuda.synchronize(ctx.device)
    torch.cuda.reset_peak_memory_stats(ctx.device)
    before = sampled_memory(ctx.device)
    block = torch.ones(GIB, dtype=torch.uint8, device=ctx.device)  # written, so every page is committed
    torch.cuda.synchronize(ctx.device)
    after = sampled_memory(ctx.device)
    del block
    release(ctx)

    def delta(key: str) -> float | None:
        return after[key] - before[key] if after.get(key) is not None and before.get(key) is not None else None

    return {"allocated_delta_bytes": delta("allocated_peak_bytes"),
            "reserved_delta_bytes": delta("reserved_peak_bytes"),
            "nvml_process_delta_bytes": delta("nvml_process_peak_bytes"),
            "nvml_device_delta_bytes": delta("nvml_device_used_peak_bytes")}


def measure_memory_ordering(ctx: Context) -> dict[str, Any]:
    release(ctx)
    trained = train(ctx, "memory", cell_settings(ctx))
    mem = trained.summary["memory"]
    process = mem.get("nvml_process_peak_bytes")
    return {
        "allocated_peak_bytes": mem.get("allocated_peak_bytes"), "reserved_peak_bytes": mem.get("reserved_peak_bytes"),
        "nvml_process_peak_bytes": process, "nvml_device_used_peak_bytes": mem.get("nvml_device_used_peak_bytes"),
        "memory_source": mem.get("source"),
        "process_absent_reason": None if process is not None else (mem.get("sources") or {}).get("nvml"),
        "mig_mode": mig_mode(), "tensor": one_gib_tensor(ctx),
    }


# -- 3. sampler overhead -----------------------------------------------------------------------


def measure_sampler_overhead(ctx: Context) -> dict[str, Any]:
    from bench.schema import TRAINER_KEYS

    default = TRAINER_KEYS["memory_interval_ms"].default
    steps = 3 * ctx.sizes.steps
    times: dict[int, list[float]] = {default: [], 0: []}
    for round_ in range(ctx.sizes.rounds):
        order = (default, 0) if round_ % 2 == 0 else (0, default)  # interleaved, alternating who goes first
        for interval in order:
            settings = cell_settings(ctx, memory_interval_ms=interval, max_steps=steps, steps_per_epoch=steps)
            times[interval].append(timed_train(ctx, f"sampler-{interval}", settings)[1])
    return {"sampling_step_s": times[default], "disabled_step_s": times[0], "interval_ms": default,
            "steps": steps, "timing": "mean step time after the first 20 steps, from the loop's loss reads"}


# -- 4. step timer vs CUDA events --------------------------------------------------------------


def measure_step_timing(ctx: Context) -> dict[str, Any]:
    from bench import timing

    events: dict[int, tuple[Any, Any]] = {}

    class EventTimer(timing.StepWindowTimer):
        """bench's step timer, plus a CUDA event pair inside each of its begin/end brackets."""

        def begin(self, step: int) -> None:
            super().begin(step)
            if self.device.type == "cuda" and self.first <= step <= self.last:
                start = torch.cuda.Event(enable_timing=True)
                start.record()
                events[step] = (start, None)

        def end(self, step: int) -> None:
            if step in events and events[step][1] is None:
                stop = torch.cuda.Event(enable_timing=True)
                stop.record()  # before the timer's own synchronize
                events[step] = (events[step][0], stop)
            super().end(step)

    with replaced(timing, "StepWindowTimer", EventTimer):
        trained = train(ctx, "timing", cell_settings(ctx))
    timer = trained.summary["step_times_10_19_s"]
    event_s = [events[s][0].elapsed_time(events[s][1]) / 1000 for s in sorted(events)] if events else None
    return {"timer_s": timer, "event_s": event_s}


# -- 5. bf16 and fp16 --------------------------------------------------------------------------


def checkpoint_state(trained: Trained) -> dict[str, Any]:
    from bench.checkpoint import CHECKPOINT_DIR, CheckpointStore

    restored = CheckpointStore(trained.path / CHECKPOINT_DIR, trained.summary["id"]).load()
    if restored is None:
        raise RuntimeError(f"no checkpoint left in {trained.path}")
    return restored.state


def tensor_dtypes(tree: Any) -> list[str]:
    """The dtypes of the floating-point tensors (more than one element) anywhere in ``tree``."""
    found: set[str] = set()

    def visit(obj: Any) -> None:
        if isinstance(obj, torch.Tensor):
            if obj.is_floating_point() and obj.numel() > 1:
                found.add(str(obj.dtype))
        elif isinstance(obj, dict):
            for value in obj.values():
                visit(value)
        elif isinstance(obj, (list, tuple)):
            for value in obj:
                visit(value)

    visit(tree)
    return sorted(found)


class RecordingScaler(torch.amp.GradScaler):
    """torch's GradScaler, noting after each step the scale and whether the weights changed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.scales: list[float] = []
        self.overflowed: list[bool] = []
        self.changed: list[bool] = []

    def step(self, optimizer: Any, *args: Any, **kwargs: Any) -> Any:
        params = [p for group in optimizer.param_groups for p in group["params"]]
        before = [p.detach().clone() for p in params]
        result = super().step(optimizer, *args, **kwargs)
        self.changed.append(any(not torch.equal(b, p.detach()) for b, p in zip(before, params)))
        return result

    def update(self, new_scale: Any = None) -> None:
        old = self.get_scale()
        super().update(new_scale)
        self.scales.append(self.get_scale())
        self.overflowed.append(self.get_scale() < old)  # update() backs off only after an inf/NaN gradient


def measure_mixed_precision(ctx: Context) -> dict[str, Any]:
    import bench.training.run as run_module

    step = 50
    halted = {"max_steps": step + 10, "steps_per_epoch": step + 10, "halt_at_step": step, "checkpoint": True}
    fp32 = train(ctx, "fp32", cell_settings(ctx, dtype="float32", **halted))
    bf16 = train(ctx, "bf16", cell_settings(ctx, dtype="bfloat16", **halted))
    state = checkpoint_state(bf16)
    scalers: list[RecordingScaler] = []

    def overflowing_scaler(device: torch.device, dtype: str) -> torch.amp.GradScaler:
        # The injected fault: a scale of 2^32 overflows fp16 gradients until it has backed off.
        scaler = RecordingScaler(device.type, init_scale=2.0**32, enabled=dtype == "float16")
        scalers.append(scaler)
        return scaler

    with replaced(run_module, "grad_scaler", overflowing_scaler):
        fp16 = train(ctx, "fp16", cell_settings(ctx, dtype="float16", max_steps=step, steps_per_epoch=step))
    scaler = scalers[-1]
    overflow_steps = [i for i, o in enumerate(scaler.overflowed) if o]
    logged = [r["train_loss"] for r in fp16.rows if r.get("kind") == "log"]
    return {
        "bf16": {"step": step, "loss_fp32": loss_at(fp32.rows, step), "loss_bf16": loss_at(bf16.rows, step),
                 "weight_dtypes": tensor_dtypes(state["model"]), "optimizer_dtypes": tensor_dtypes(state["optimizer"])},
        "fp16": {"init_scale": 2.0**32, "scales": scaler.scales, "overflow_steps": overflow_steps,
                 "applied_overflow_steps": [i for i in overflow_steps if scaler.changed[i]],
                 "final_loss": logged[-1] if logged else None},
    }


# -- 6. TF32 -----------------------------------------------------------------------------------


def time_matmul(device: torch.device, size: int, repeats: int = 10) -> float:
    """Median milliseconds of one ``size x size`` fp32 matmul (CUDA events; perf_counter on CPU)."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    for _ in range(3):
        a @ b
    samples = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            a @ b
            stop.record()
            stop.synchronize()
            samples.append(start.elapsed_time(stop))
        else:
            began = time.perf_counter()
            a @ b
            samples.append((time.perf_counter() - began) * 1000)
    return sorted(samples)[len(samples) // 2]


def tf32_numbers(device: torch.device) -> dict[str, Any]:
    """Matmul time with bench's ``tf32`` off and on, and every warning raised meanwhile."""
    from bench.accel import configure_tf32

    cuda = device.type == "cuda"
    size = 4096 if cuda else 256
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        timings: dict[bool, list[float]] = {False: [], True: []}
        for enabled in (False, True, False, True):  # interleaved
            configure_tf32(device, enabled)
            timings[enabled].append(time_matmul(device, size))
        configure_tf32(device, True)
        precision = getattr(torch.backends.cuda.matmul, "fp32_precision", None)
    configure_tf32(device, True)  # bench's default for whatever runs next
    messages = sorted({f"{w.category.__name__}: {str(w.message).splitlines()[0][:160]}" for w in caught})
    return {"size": size, "ms_off": min(timings[False]) if cuda else None,
            "ms_on": min(timings[True]) if cuda else None, "cpu_ms": None if cuda else timings[True],
            "warnings": messages, "fp32_precision": precision}


def measure_tf32(ctx: Context) -> dict[str, Any]:
    if not ctx.cuda:
        return tf32_numbers(ctx.device)
    # A fresh process: torch warns once per process, and earlier checks already set TF32 here.
    done = subprocess.run([sys.executable, str(Path(__file__).with_name("gpu_acceptance.py")), "--child", "tf32"],
                          capture_output=True, text=True, timeout=ctx.timeout(120), cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"TF32 child failed: {done.stderr.strip()[-300:]}")
    numbers = json.loads(done.stdout.strip().splitlines()[-1])
    # Warnings printed by C++ code outside Python's warning machinery land on stderr.
    stray = [line for line in done.stderr.splitlines() if "tf32" in line.lower() or "fp32_precision" in line]
    numbers["warnings"] += [f"stderr: {line[:160]}" for line in stray]
    return numbers


# -- 7. torch.compile --------------------------------------------------------------------------


def graph_count() -> int:
    from torch._dynamo.utils import counters
    return int(counters["stats"]["unique_graphs"])


def measure_compile(ctx: Context) -> dict[str, Any]:
    import bench.training.loop as loop_module

    steps, at = 30, 20
    settings = {"max_steps": steps, "steps_per_epoch": steps}
    graphs: dict[str, int] = {}
    real_step = loop_module.train_step

    def counted_step(run: Any) -> None:
        if run.loop.step == 0:
            graphs["before"] = graph_count()  # the warm-up has compiled by now
        real_step(run)
        if run.loop.step == steps - 1:
            graphs["after"] = graph_count()  # before the validation, which compiles its own no-grad graph

    with replaced(loop_module, "train_step", counted_step):
        compiled = train(ctx, "compiled", cell_settings(ctx, compile=True, **settings))
    eager = train(ctx, "eager", cell_settings(ctx, compile=False, **settings))
    return {"compile_time_s": compiled.summary.get("compile_time_s"),
            "time_per_step_s": compiled.summary.get("time_per_step_s"), "steps": steps,
            "graphs_before": graphs.get("before"), "graphs_after": graphs.get("after"), "step": at,
            "loss_compiled": loss_at(compiled.rows, at), "loss_eager": loss_at(eager.rows, at)}


# -- 8. pin_memory -----------------------------------------------------------------------------


def measure_pin_memory(ctx: Context) -> dict[str, Any]:
    steps = 3 * ctx.sizes.steps
    curves: dict[str, list[dict[str, float]]] = {"pinned": [], "unpinned": []}
    times: dict[str, list[float]] = {"pinned": [], "unpinned": []}
    for round_ in range(max(2, ctx.sizes.rounds)):
        for pin in ((False, True) if round_ % 2 == 0 else (True, False)):  # interleaved
            side = "pinned" if pin else "unpinned"
            settings = cell_settings(ctx, pin_memory=pin, max_steps=steps, steps_per_epoch=steps)
            trained, step_s = timed_train(ctx, side, settings)
            times[side].append(step_s)
            curves[side].append(curve(trained.rows))
    # The unpinned run twice: how far two identical runs drift (the kernels' own non-determinism).
    losses = {"pinned": curves["pinned"][0], "unpinned": curves["unpinned"][0],
              "unpinned_again": curves["unpinned"][1]}
    if not ctx.cuda:  # pin_memory has no effect on the CPU: these times say nothing about pinning
        return {"losses": losses, "step_s": None, "cpu_step_s": times}
    return {"losses": losses, "step_s": times}


# -- 9. --jobs 2 and out-of-memory -------------------------------------------------------------


def huge_batch(ctx: Context, seq_len: int, n_embd: int) -> int:
    """An even batch whose embedding output alone, at half the batch, is twice the GPU's memory."""
    total = torch.cuda.get_device_properties(ctx.device).total_memory
    half = math.ceil(2 * total / (seq_len * n_embd * 4))
    return 2 * half


def measure_jobs_oom(ctx: Context) -> dict[str, Any]:
    from bench.store import ResultStore

    folder = ctx.folder("jobs")
    seq_len, name = 64, "jobs_oom"
    settings = cell_settings(ctx, n_layer=1, n_embd=64, n_head=2, seq_len=seq_len, n_positions=seq_len,
                             max_steps=20, steps_per_epoch=20, oom_retry=True)
    settings.pop("batch_size")
    huge = huge_batch(ctx, seq_len, 1024) if ctx.cuda else None
    axes = {"batch_size": [8, huge, 10] if huge else [8, 10]}
    include = [{"batch_size": huge, "n_embd": 1024, "n_head": 8}] if huge else None
    (folder / "m.toml").write_text(matrix_text(name, settings, axes, include))
    done = run_bench(["run", str(folder / "m.toml"), "--device", ctx.device.type, "--jobs", "2",
                      "--outputs", str(folder / "out")], timeout=ctx.timeout(240))
    printed = done.stderr
    summaries = ResultStore(folder / "out", name).summaries()
    by_batch = {s["config"]["batch_size"]: s for s in summaries}
    statuses = {s["name"]: s["status"] for s in summaries}
    workers = re.findall(r": started on (.+)$", printed, flags=re.MULTILINE)
    oom = by_batch.get(huge) if huge else None
    after = by_batch.get(10)
    return {
        "gpus_visible": torch.cuda.device_count() if ctx.cuda else None,
        "workers": workers if ctx.cuda else None, "cpu_workers": None if ctx.cuda else workers,
        "statuses": statuses, "exit_code": done.returncode,
        "nvml_sources": {s["name"]: ((s.get("memory") or {}).get("sources") or {}).get("nvml")
                         for s in summaries if s["status"] == "ok"} if ctx.cuda else {},
        "oom_cell": oom["name"] if oom else None, "oom_batch": huge,
        "oom_micro_batch": oom.get("micro_batch_size") if oom else None,
        "retry_seen": "retrying once with batch_size" in printed,
        "cell_after_oom": bool(after and after["status"] == "ok"),
    }


# -- 10. MFU -----------------------------------------------------------------------------------


def measure_mfu(ctx: Context) -> dict[str, Any]:
    m = ctx.sizes.mfu
    release(ctx)
    settings = cell_settings(ctx, dataset="random-tokens", k=m["vocab_size"], vocab_size=m["vocab_size"],
                             n_layer=m["n_layer"], n_embd=m["n_embd"], n_head=m["n_head"], seq_len=m["seq_len"],
                             n_positions=m["seq_len"], batch_size=m["batch_size"], max_steps=m["max_steps"],
                             steps_per_epoch=m["max_steps"], train_tokens=m["seq_len"] * m["batch_size"] * 40 + 1,
                             valid_tokens=m["seq_len"] + 1, test_tokens=m["seq_len"] + 1, dtype="bfloat16",
                             compile=True, log_every=20)
    trained = train(ctx, "mfu", settings)
    s = trained.summary
    return {key: s.get(key) for key in ("mfu", "achieved_flops_per_s", "peak_flops_per_s", "peak_flops_source",
                                        "tokens_per_s", "compile_time_s", "time_per_step_s", "matmul_precision")} | {
        "device_name": s.get("gpu_name"), "sizes": m}


# -- 11. same seed twice -----------------------------------------------------------------------


def measure_determinism(ctx: Context) -> dict[str, Any]:
    at = 20
    first = train(ctx, "seed-a", cell_settings(ctx))
    second = train(ctx, "seed-b", cell_settings(ctx))
    numbers: dict[str, Any] = {"step": at, "loss_first": loss_at(first.rows, at),
                               "loss_second": loss_at(second.rows, at), "nondeterministic_ops": []}
    if numbers["loss_first"] != numbers["loss_second"]:
        numbers["nondeterministic_ops"] = nondeterministic_ops(ctx)
    return numbers


def nondeterministic_ops(ctx: Context) -> list[str]:
    """The kernels torch itself names as non-deterministic while it trains the same cell once more
    under ``use_deterministic_algorithms(True, warn_only=True)``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            train(ctx, "seed-deterministic", cell_settings(ctx))
        finally:
            torch.use_deterministic_algorithms(False)
    named = set()
    for w in caught:
        text = str(w.message)
        if "deterministic" in text:
            named.add(text.split(" does not have a deterministic")[0].strip()[:120])
    return sorted(named)


# -- 12. SIGKILL and resume --------------------------------------------------------------------


def latest_checkpoint_step(outputs: Path) -> int:
    """The newest checkpoint's step under ``outputs`` (0 while there is none); the index is
    replaced atomically, but may vanish between listing and reading."""
    steps = [0]
    for index in outputs.glob("*/*/checkpoints/index.json"):
        try:
            steps.append(int(json.loads(index.read_text()).get("latest", {}).get("step", 0)))
        except (OSError, ValueError):
            continue
    return max(steps)


def measure_sigkill_resume(ctx: Context) -> dict[str, Any]:
    from bench.store import ResultStore

    k = ctx.sizes.kill
    folder, name = ctx.folder("kill"), "kill"
    settings = cell_settings(ctx, max_steps=k["steps"], steps_per_epoch=k["steps"], checkpoint=True,
                             checkpoint_every=k["every"])
    (folder / "m.toml").write_text(matrix_text(name, settings))
    run = ["run", str(folder / "m.toml"), "--device", ctx.device.type, "--outputs"]
    for outputs in ("reference", "reference_again"):  # twice: how far two uninterrupted runs drift
        reference = run_bench(run + [str(folder / outputs)], timeout=ctx.timeout(180))
        if reference.returncode != 0:
            raise RuntimeError(f"uninterrupted run failed: {reference.stderr.strip()[-300:]}")

    killed_outputs = folder / "killed"
    process = subprocess.Popen(BENCH + run + [str(killed_outputs)], cwd=ROOT, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    limit = time.monotonic() + ctx.timeout(180)
    killed_at = None
    try:
        while process.poll() is None and time.monotonic() < limit:
            step = latest_checkpoint_step(killed_outputs)
            if step >= k["after"]:
                os.killpg(process.pid, signal.SIGKILL)
                killed_at = step
                break
            time.sleep(0.02)
    finally:
        if process.poll() is None and killed_at is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    resumed = run_bench(run + [str(killed_outputs)], timeout=ctx.timeout(180))
    if resumed.returncode != 0:
        raise RuntimeError(f"the rerun after SIGKILL failed: {resumed.stderr.strip()[-300:]}")
    def metrics(outputs: Path) -> list[dict[str, Any]]:
        return ResultStore(outputs, name).records()[0].read_metrics()

    summary = ResultStore(killed_outputs, name).records()[0].read_summary() or {}
    return {"killed_at_step": killed_at, "finished_before_kill": killed_at is None,
            "resumed_at": summary.get("resumed_at_steps"), "reference": curve(metrics(folder / "reference")),
            "reference_again": curve(metrics(folder / "reference_again")), "resumed": curve(metrics(killed_outputs))}


# -- 13. HellaSwag under bf16 ------------------------------------------------------------------


def measure_hellaswag(ctx: Context) -> dict[str, Any]:
    from bench.errors import BenchError

    try:
        from bench.evaluation.hellaswag import locate_hellaswag, run_hellaswag
        from bench.evaluation.lm_adapter import BenchLM
        source = locate_hellaswag()
    except (ImportError, BenchError) as exc:
        raise Skip(f"HellaSwag unavailable: {str(exc).splitlines()[0][:200]}") from None
    from bench.evaluation.checkpoint_loading import load_cell
    from bench.registry import PluginSelection, load_plugins

    h = ctx.sizes.hellaswag
    settings = cell_settings(ctx, dataset="tinyshakespeare", tokenizer="gpt2", lr=3e-3, max_steps=h["steps"],
                             steps_per_epoch=h["steps"], seq_len=128, n_positions=128)
    for key in ("vocab_size", "train_tokens", "valid_tokens", "test_tokens"):
        settings.pop(key)
    try:
        trained = train(ctx, "hellaswag", settings)
    except Refused as exc:  # TinyShakespeare or the GPT-2 BPE files missing, and no network
        raise Skip(f"the text cell cannot be built here: {exc}") from None
    registry = load_plugins(PluginSelection.from_options(), warn=lambda line: None).registry
    loaded = load_cell(trained.path, registry, ctx.device)
    picks, scores = {}, {}
    for dtype in ("float32", "bfloat16"):
        lm = BenchLM(loaded.model, loaded.tokenizer, batch_size=32, device=ctx.device, dtype=dtype)
        result = run_hellaswag(lm, limit=h["items"], source=source, log_samples=True)
        picks[dtype] = [max(range(len(s["loglikelihoods"])), key=s["loglikelihoods"].__getitem__)
                        for s in result["samples"]]
        scores[dtype] = result
    same = sum(a == b for a, b in zip(picks["float32"], picks["bfloat16"]))
    items = len(picks["float32"])
    return {"items": items, "agreement": same / items if items else None,
            "acc_fp32": scores["float32"]["acc"], "acc_bf16": scores["bfloat16"]["acc"],
            "acc_norm_fp32": scores["float32"]["acc_norm"], "acc_norm_bf16": scores["bfloat16"]["acc_norm"],
            "source": source.describe()}


# -- 14. the hw3 matrix ------------------------------------------------------------------------


def hw3_matrix(steps: int, max_chars: int) -> str:
    """matrices/hw3.toml with ``max_steps`` (and, for the dry run, a shorter WikiText-2) added."""
    text = (ROOT / "matrices" / "hw3.toml").read_text()
    extra = f"max_steps = {steps}\n" + (f"max_chars = {max_chars}\n" if max_chars else "")
    text = text.replace('name = "hw3"', 'name = "hw3_acceptance"', 1)
    return text.replace("[defaults]\n", "[defaults]\n" + extra, 1)


def measure_hw3(ctx: Context) -> dict[str, Any]:
    from bench.store import ResultStore

    h = ctx.sizes.hw3
    folder = ctx.folder("hw3")
    (folder / "hw3.toml").write_text(hw3_matrix(h["steps"], h["max_chars"]))
    args = ["run", str(folder / "hw3.toml"), "--device", ctx.device.type, "--outputs", str(folder / "out")]
    if h["filter"]:
        args += ["--filter", h["filter"]]
    release(ctx)
    try:
        done = run_bench(args, timeout=ctx.timeout(600))
        code, printed = done.returncode, done.stderr
    except subprocess.TimeoutExpired as exc:  # keep what finished before the time guard
        code, printed = None, (exc.stderr or b"").decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
    summaries = ResultStore(folder / "out", "hw3_acceptance").summaries() if (folder / "out").exists() else []
    if not summaries and code == 2:
        raise Skip(f"hw3 cannot run here: {printed.strip().splitlines()[-1][:240] if printed.strip() else 'exit 2'}")
    cells = []
    for s in summaries:
        mem = s.get("memory") or {}
        nvml = mem.get("nvml_process_mean_bytes")
        cells.append({"name": s["name"], "status": s["status"], "time_per_step_s": s.get("time_per_step_s"),
                      "tokens_per_s": s.get("tokens_per_s"),
                      "memory_bytes": nvml if nvml is not None else mem.get("reserved_peak_bytes"),
                      "memory_peak_bytes": mem.get("nvml_process_peak_bytes") or mem.get("reserved_peak_bytes"),
                      "memory_source": "NVML process mean" if nvml is not None else mem.get("source")})
    return {"steps": h["steps"], "exit_code": code, "cells": cells,
            "timed_out": code is None}


MEASUREMENTS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "nvml_identity": measure_nvml_identity,
    "memory_ordering": measure_memory_ordering,
    "sampler_overhead": measure_sampler_overhead,
    "step_timing": measure_step_timing,
    "mixed_precision": measure_mixed_precision,
    "tf32": measure_tf32,
    "compile": measure_compile,
    "pin_memory": measure_pin_memory,
    "jobs_oom": measure_jobs_oom,
    "mfu": measure_mfu,
    "determinism": measure_determinism,
    "sigkill_resume": measure_sigkill_resume,
    "hellaswag_bf16": measure_hellaswag,
    "hw3": measure_hw3,
}

# Rough seconds each check takes on one H100/H200 (the time guard skips a check when less is left).
ESTIMATE_S: dict[str, float] = {
    "nvml_identity": 10, "memory_ordering": 10, "sampler_overhead": 25, "step_timing": 5, "mixed_precision": 15,
    "tf32": 10, "compile": 45, "pin_memory": 15, "jobs_oom": 40, "mfu": 70, "determinism": 10,
    "sigkill_resume": 45, "hellaswag_bf16": 40, "hw3": 100,
}
SKIPPED_IN_DRY_RUN = {"nvml_identity"}  # needs NVML and a GPU even to try


def tmp_root() -> Path:
    return Path(tempfile.mkdtemp(prefix="bench-gpu-acceptance-"))
