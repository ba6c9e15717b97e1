"""`bench estimate`: what each cell of a matrix will cost, measured before it runs.

For every cell it builds the real run (data, model, optimizer, schedule, sampler) on the target
device, trains ``steps`` real optimizer steps (batch sampling included) in a temporary folder
that is deleted afterwards, and times steps 10-19 exactly with :class:`bench.timing.StepWindowTimer`.
The slowest of those steps, times the cell's planned steps, gives the estimate:
``hours = worst ms x planned steps / 3.6e6`` and ``cost = hours x cost_per_hour`` (10-605 HW5's rule:
the worst step past warm-up, so the estimate errs high). Beside it stand the median of the same ten
steps and the hours it projects, and their spread (worst / median): on a shared or noisy machine one
slow step can multiply the worst-step figure, and a spread above :data:`NOISY_SPREAD` says so.

Cells that differ only in keys that cannot change how long one step takes (:data:`TIME_NEUTRAL_KEYS`:
the seed, the learning rate, how many steps, budgets, evaluation and checkpoint settings) share one
measurement: the first such cell is timed, the others are projected from its steps with their own
planned steps, and the table names the cell that was measured.
"""

from __future__ import annotations

import io
import json
import statistics
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from bench import memory, timing
from bench.cells import Cell
from bench.errors import BenchError
from bench.registry import Registry
from bench.store import CellRecord

ESTIMATE_FILE = "estimate.json"
MIN_STEPS = timing.WORST_WINDOW[1] + 1  # the window must be complete
NOISY_SPREAD = 1.25  # worst / median of steps 10-19 above this: the machine was busy while timing

# Harness keys whose value cannot change the time of one optimizer step (only how many steps run,
# when the run stops, or what it records). Cells equal in every other key share a measurement.
TIME_NEUTRAL_KEYS = frozenset({
    "seed", "lr", "epochs", "max_steps", "steps_per_epoch", "max_flops", "max_tokens", "max_time", "max_cost",
    "cost_per_hour", "eval_every", "eval_stride", "eval_batch_size", "target_loss", "target_ppl", "halt_at_step",
    "checkpoint", "checkpoint_every", "checkpoint_async", "max_checkpoint_mb", "divergence_factor",
    "divergence_margin", "memory_interval_ms", "peak_tflops", "trackers", "oom_retry",
})


def shape_key(config: dict[str, Any]) -> str:
    """What decides the time of one step: the config without :data:`TIME_NEUTRAL_KEYS`."""
    return json.dumps({k: v for k, v in config.items() if k not in TIME_NEUTRAL_KEYS}, sort_keys=True, default=str)


@dataclass
class CellEstimate:
    id: str
    name: str
    params: int
    flops_per_token: float
    planned_steps: int
    planned_tokens: int
    train_flops: float
    worst_step_ms: float
    worst_step_index: int
    hours: float
    cost: float
    peak_memory_bytes: int | None
    peak_memory_source: str
    checkpoint_bytes: int  # the resumable training state (model, optimizer, RNGs, sampler, loop)
    weights_bytes: int  # best.pt: the model's weights alone
    median_step_ms: float = 0.0  # median of steps 10-19
    median_hours: float = 0.0  # the same projection at the median step
    spread: float = 1.0  # worst / median of steps 10-19
    measured_by: str = ""  # the cell whose steps were timed, when another cell of the same shape was

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def projected(worst_step_s: float, planned_steps: int, cost_per_hour: float) -> tuple[float, float]:
    """(hours, dollars) for ``planned_steps`` steps at the worst measured step time."""
    hours = worst_step_s * 1000 * planned_steps / 3.6e6
    return hours, hours * cost_per_hour


def peak_memory(device: torch.device, figures: dict[str, Any]) -> tuple[int | None, str]:
    """The peak seen during the measured steps, and where it comes from."""
    if device.type == "cuda":
        for key, source in (("nvml_process_peak_bytes", "NVML process memory, sampled"),
                            ("allocated_peak_bytes", "torch.cuda.max_memory_allocated")):
            if figures.get(key) is not None:
                return int(figures[key]), source
    if figures.get("rss_sampled_peak_bytes") is not None:
        return int(figures["rss_sampled_peak_bytes"]), "process RSS, sampled"
    return figures.get("rss_peak_bytes"), "getrusage ru_maxrss (process lifetime peak)"


def _size(obj: Any) -> int:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.tell()


@dataclass
class Measurement:
    """What timing one cell's first steps tells about every cell of its shape."""

    cell_name: str
    params: int
    flops_per_token: float
    train_tokens: int
    step_times_s: list[float]  # steps 10-19 in order
    worst_step_index: int
    peak_memory_bytes: int | None
    peak_memory_source: str
    checkpoint_bytes: int
    weights_bytes: int


def measure_cell(cell: Cell, registry: Registry, device: torch.device, *, steps: int,
                 say: Callable[[str], None]) -> Measurement:
    """Build the cell's real run in a scratch folder and time ``steps`` optimizer steps."""
    # Imported here: the training package is heavy and only this command needs it.
    from bench.optimizer_modes import training
    from bench.timing import synchronize
    from bench.training.loop import set_lr, train_step
    from bench.training.run import build_run
    from bench.training.state import LoopState

    config = {**cell.config, "checkpoint": False, "halt_at_step": 0,
              "memory_interval_ms": cell.config["memory_interval_ms"] or 100}
    with tempfile.TemporaryDirectory(prefix="bench-estimate-") as scratch:
        run = build_run(Cell(cell.id, cell.name, config), registry, None, device, CellRecord(Path(scratch)),
                        LoopState(), None, say)
        timer = timing.StepWindowTimer(device)
        memory.reset_peak(device)
        run.model.train()
        training(run.optimizer)  # a Schedule-Free optimizer steps only in train mode, as in the loop
        sampler = memory.start_sampling(device, config["memory_interval_ms"])
        try:
            for step in range(steps):
                timer.begin(step)
                set_lr(run.optimizer, run.schedule(step))
                train_step(run)
                timer.end(step)
            synchronize(device)
        finally:
            figures = memory.run_memory(device, sampler.stop())
        checkpoint_bytes, weights_bytes = _size(run.checkpoint_state()), _size(run.model.state_dict())
    timed = timer.result()
    peak, source = peak_memory(device, figures)
    return Measurement(cell.name, int(run.model.parameter_counts()["total"]), run.plan.flops_per_token,
                       int(run.data.splits["train"].numel()), timed["step_times_10_19_s"],
                       timed["worst_step_10_19_index"], peak, source, checkpoint_bytes, weights_bytes)


def project(cell: Cell, measured: Measurement, cost_per_hour: float) -> CellEstimate:
    """The cell's hours and dollars from a measurement of its shape (its own, or a twin's)."""
    from bench.budget import make_plan

    plan = make_plan(cell.config, measured.train_tokens, int(measured.flops_per_token))
    worst, median = max(measured.step_times_s), statistics.median(measured.step_times_s)
    hours, cost = projected(worst, plan.total_steps, cost_per_hour)
    tokens = plan.total_steps * plan.tokens_per_step
    return CellEstimate(cell.id, cell.name, measured.params, measured.flops_per_token, plan.total_steps, tokens,
                        measured.flops_per_token * tokens, worst * 1000, measured.worst_step_index, hours, cost,
                        measured.peak_memory_bytes, measured.peak_memory_source, measured.checkpoint_bytes,
                        measured.weights_bytes, median_step_ms=median * 1000,
                        median_hours=projected(median, plan.total_steps, cost_per_hour)[0],
                        spread=worst / median if median > 0 else 1.0,
                        measured_by="" if measured.cell_name == cell.name else measured.cell_name)


def noisy_warning(estimate: CellEstimate) -> str | None:
    """One line when steps 10-19 varied enough that the worst-step figure is mostly noise."""
    if estimate.spread <= NOISY_SPREAD:
        return None
    return (f"warning: {estimate.name}: steps 10-19 vary {estimate.spread:.2f}x (worst {estimate.worst_step_ms:.1f} "
            f"ms, median {estimate.median_step_ms:.1f} ms): the machine is busy or noisy, so the worst-step hours "
            "err high; the median column is the steadier figure (or estimate again on a quiet machine)")


def check_steps(steps: int, cost_per_hour: float) -> None:
    if steps < MIN_STEPS:
        raise BenchError(f"--steps must be at least {MIN_STEPS}: the estimate takes the slowest of steps "
                         f"{timing.WORST_WINDOW[0]}-{timing.WORST_WINDOW[1]}; got {steps}")
    if cost_per_hour <= 0:
        raise BenchError(f"--cost-per-hour must be > 0, got {cost_per_hour}")


def totals(estimates: list[CellEstimate]) -> dict[str, float]:
    return {"cells": len(estimates), "hours": sum(e.hours for e in estimates),
            "median_hours": sum(e.median_hours for e in estimates),
            "measured": sum(1 for e in estimates if not e.measured_by),
            "cost": sum(e.cost for e in estimates), "train_flops": sum(e.train_flops for e in estimates),
            "planned_steps": sum(e.planned_steps for e in estimates)}
