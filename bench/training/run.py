"""Build everything one cell trains with, once, in one object the loop reads from."""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from bench import rng, timing
from bench.accel import autocast_context, compile_model, configure_tf32, default_eval_batch_size, grad_scaler
from bench.budget import StepPlan, make_plan
from bench.cells import Cell
from bench.checkpoint import CHECKPOINT_DIR, CheckpointStore
from bench.data.loading import CellData, load_cell_data
from bench.data.prefetch import PrefetchingSampler
from bench.data.samplers import RandomBatchSampler, window_limit
from bench.data.shards import HostTokens
from bench.evaluation.perplexity import evaluate
from bench.loss import lm_loss
from bench.param_roles import tag_parameter_roles
from bench.registry import Registry
from bench.schedule_free import schedule_free_problem
from bench.store import CellRecord
from bench.training.footprint import estimate_training_bytes, free_bytes, too_large_warning
from bench.training.state import LoopState


@dataclass
class Run:
    """One cell's training: its parts, its plan and its loop state."""

    cell: Cell
    device: torch.device
    data: CellData
    model: Any  # bench.lm.LanguageModel
    optimizer: torch.optim.Optimizer
    schedule: Callable[[int], float]
    sampler: RandomBatchSampler
    plan: StepPlan
    loop: LoopState
    record: CellRecord
    checkpoints: CheckpointStore | None
    hooks: Any
    say: Callable[[str], None]
    best_weights: dict[str, torch.Tensor] | None = None  # CPU copy of the best epoch's weights
    # Loss scaling, active only for dtype float16 (a disabled scaler passes everything through).
    scaler: torch.amp.GradScaler = field(default_factory=lambda: torch.amp.GradScaler("cpu", enabled=False))
    compile_time_s: float | None = None  # the compiling warm-up step (compile = true), not training time

    @property
    def config(self) -> dict[str, Any]:
        return self.cell.config

    @property
    def info(self) -> dict[str, Any]:
        """What lifecycle hooks receive: the cell's id, name and config."""
        return self.cell.as_dict()

    @property
    def loss_ceiling(self) -> float | None:
        """A logged train loss above this is divergence: worse than uniform guessing by the margin."""
        margin = self.config["divergence_margin"]
        return math.log(self.data.vocab_size) + margin if margin > 0 else None

    def evaluate(self, split: str) -> dict[str, float]:
        config = self.config
        words = self.data.words.get(split) if self.data.words else None
        batch_size = config["eval_batch_size"] or default_eval_batch_size(self.device, self.loop.micro_batch)
        return evaluate(self.model, self.data.splits[split], seq_len=config["seq_len"], batch_size=batch_size,
                        dtype=config["dtype"], stride=config["eval_stride"] or None, words=words,
                        loss_chunk=config["loss_chunk"], limit=self.window_limit(split), device=self.device)

    def window_limit(self, split: str) -> int:
        """Windows an evaluation of ``split`` scores (0: all); ``val_windows``/``test_windows``."""
        setting = self.config["val_windows" if split == "valid" else "test_windows"]
        return window_limit(setting, self.data.splits[split].numel(), self.config["seq_len"])

    def checkpoint_state(self) -> dict[str, Any]:
        # Built-in schedules are pure functions of the step; a plugin's stateful one may expose state_dict.
        schedule_state = self.schedule.state_dict() if hasattr(self.schedule, "state_dict") else None
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "schedule": schedule_state, "sampler": self.sampler.state_dict(), "rng": rng.capture(),
                "loop": self.loop.to_dict(), "scaler": self.scaler.state_dict()}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_run(cell: Cell, registry: Registry, hooks: Any, device: torch.device, record: CellRecord,
              loop: LoopState, batching: tuple[int, int] | None, say: Callable[[str], None]) -> Run:
    """Seed, load data, build model, optimizer, plan, schedule and sampler, then resume if a
    checkpoint is readable. ``batching`` replaces ``(batch_size, grad_accum)`` for an
    out-of-memory retry with the same effective batch."""
    config = cell.config
    seed_everything(config["seed"])
    data = load_cell_data(config, registry, device)
    model_component = registry.get("model", config["model"])
    model = model_component.build(config, data.vocab_size).to(device)
    tag_parameter_roles(model)  # optimizers that split parameters by role (muon, decay_exclude) read these
    configure_tf32(device, config["tf32"])
    if config["compile"]:
        compile_model(model)
    optimizer_component = registry.get("optimizer", config["optimizer"])
    optimizer = optimizer_component.build(config, model.parameters(), lr=config["lr"], device_type=device.type)
    plan = make_plan(config, data.splits["train"].numel(), model.flops_per_token(config["seq_len"]))
    schedule_component = registry.get("schedule", config["schedule"])
    schedule = schedule_component.build(config, lr=config["lr"], total_steps=plan.total_steps)
    sampler = _train_sampler(config, data, device)
    loop.start(device, config["batch_size"], config["grad_accum"])
    checkpoints = (CheckpointStore(record.path / CHECKPOINT_DIR, cell.id, warn=say,
                                   asynchronous=config["checkpoint_async"]) if config["checkpoint"] else None)
    run = Run(cell, device, data, model, optimizer, schedule, sampler, plan, loop, record, checkpoints, hooks, say,
              scaler=grad_scaler(device, config["dtype"]))
    if checkpoints is not None:
        resume(run, checkpoints)
    if batching is not None:
        loop.micro_batch, loop.accum = batching
    sampler.batch_size = loop.micro_batch
    loop.total_steps, loop.plan = plan.total_steps, plan
    if loop.step == 0:
        _warn_if_too_large(run)
        _warn_if_schedule_free_decays(run, registry)
    return run


def _train_sampler(config: dict[str, Any], data: CellData, device: torch.device) -> Any:
    """Random training windows, gathered where the tokens are; on CUDA with the train split on the
    host (``pin_memory``, or too large for the device: see :mod:`bench.data.loading`), gathered in
    host memory and copied from pinned memory one step ahead (see :mod:`bench.data.prefetch`)."""
    sampler = RandomBatchSampler(data.splits["train"], config["batch_size"], config["seq_len"], seed=config["seed"])
    if device.type == "cuda" and isinstance(data.splits["train"], HostTokens):
        return PrefetchingSampler(sampler, device, pin=True)
    return sampler


def _warn_if_too_large(run: Run) -> None:
    estimate = estimate_training_bytes({**run.config, "batch_size": run.loop.micro_batch},
                                       run.model.parameter_counts()["total"], run.data.vocab_size)
    line = too_large_warning(estimate, free_bytes(run.device), run.cell.name)
    if line:
        run.say(line)


def _warn_if_schedule_free_decays(run: Run, registry: Registry) -> None:
    problem = schedule_free_problem(run.config, registry)
    if problem:
        run.say(f"warning: {problem}")


def resume(run: Run, checkpoints: CheckpointStore) -> None:
    """Load the newest readable checkpoint into the run, including the best weights so far."""
    restored = checkpoints.load()
    if restored is None:
        return
    state = restored.state
    mismatch = _state_mismatch(run.model.state_dict(), state["model"])
    if mismatch:
        run.say(f"warning: checkpoint {restored.path} does not fit the model ({mismatch}); "
                "starting this cell from scratch")
        checkpoints.clear()
        return
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    if state["schedule"] is not None:  # a plugin's stateful schedule (see checkpoint_state)
        run.schedule.load_state_dict(state["schedule"])  # type: ignore[attr-defined]
    run.sampler.load_state_dict(state["sampler"])
    if state.get("scaler"):  # float16 runs: the loss scale reached; absent in older checkpoints
        run.scaler.load_state_dict(state["scaler"])
    run.loop.load_dict(state["loop"])
    rng.restore(state["rng"])
    run.loop.resumed_at.append(run.loop.step)
    # run.say prefixes the cell's label ("[2/12] gpt1-L1-adam: "), so the line does not name it again
    run.say(f"resuming after step {run.loop.step} from the {restored.source} checkpoint")
    if run.loop.best_epoch is not None and restored.best is not None:
        run.best_weights = restored.best["model"]


def compile_warm_up(run: Run) -> float:
    """Run one forward and backward pass so that torch.compile compiles before the clock starts;
    returns its seconds. The batch, the RNG streams and the gradients are put back as they were,
    so training continues exactly as without the warm-up."""
    started = time.perf_counter()
    sampler_state, rng_state = run.sampler.state_dict(), rng.capture()
    x, y = run.sampler.next_batch()
    with autocast_context(run.device, run.config["dtype"]):
        loss = lm_loss(run.model, x, y, chunk=run.config["loss_chunk"])
    loss.backward()
    run.model.zero_grad(set_to_none=True)
    run.sampler.load_state_dict(sampler_state)
    rng.restore(rng_state)
    timing.synchronize(run.device)
    return time.perf_counter() - started


def _state_mismatch(expected: dict[str, torch.Tensor], saved: dict[str, torch.Tensor]) -> str | None:
    if set(expected) != set(saved):
        return f"keys differ: {sorted(set(expected) ^ set(saved))[:3]}"
    for key, tensor in expected.items():
        if tuple(saved[key].shape) != tuple(tensor.shape):
            return f"{key} has shape {tuple(saved[key].shape)}, the model {tuple(tensor.shape)}"
    return None
