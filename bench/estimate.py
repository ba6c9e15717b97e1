"""`bench estimate`: what each cell of a matrix will cost, measured before it runs.

For every cell it builds the real run (data, model, optimizer, schedule, sampler) on the target
device, trains ``steps`` real optimizer steps (batch sampling included) in a temporary folder
that is deleted afterwards, and times steps 10-19 exactly with :class:`bench.timing.StepWindowTimer`.
The slowest of those steps, times the cell's planned steps, gives the estimate:
``hours = worst ms x planned steps / 3.6e6`` and ``cost = hours x cost_per_hour`` (10-605 HW5's rule:
the worst step past warm-up, so the estimate errs high).
"""

from __future__ import annotations

import io
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


def estimate_cell(cell: Cell, registry: Registry, device: torch.device, *, steps: int, cost_per_hour: float,
                  say: Callable[[str], None]) -> CellEstimate:
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
    return summarize(cell, run, timer.result(), figures, device, checkpoint_bytes, weights_bytes, cost_per_hour)


def summarize(cell: Cell, run: Any, timed: dict[str, Any], figures: dict[str, Any], device: torch.device,
              checkpoint_bytes: int, weights_bytes: int, cost_per_hour: float) -> CellEstimate:
    plan = run.plan
    worst = timed["worst_step_10_19_s"]
    hours, cost = projected(worst, plan.total_steps, cost_per_hour)
    peak, source = peak_memory(device, figures)
    tokens = plan.total_steps * plan.tokens_per_step
    return CellEstimate(cell.id, cell.name, int(run.model.parameter_counts()["total"]), plan.flops_per_token,
                        plan.total_steps, tokens, plan.flops_per_token * tokens, worst * 1000,
                        timed["worst_step_10_19_index"], hours, cost, peak, source, checkpoint_bytes, weights_bytes)


def check_steps(steps: int, cost_per_hour: float) -> None:
    if steps < MIN_STEPS:
        raise BenchError(f"--steps must be at least {MIN_STEPS}: the estimate takes the slowest of steps "
                         f"{timing.WORST_WINDOW[0]}-{timing.WORST_WINDOW[1]}; got {steps}")
    if cost_per_hour <= 0:
        raise BenchError(f"--cost-per-hour must be > 0, got {cost_per_hour}")


def totals(estimates: list[CellEstimate]) -> dict[str, float]:
    return {"cells": len(estimates), "hours": sum(e.hours for e in estimates),
            "cost": sum(e.cost for e in estimates), "train_flops": sum(e.train_flops for e in estimates),
            "planned_steps": sum(e.planned_steps for e in estimates)}
