"""What the step loop carries from step to step, in one checkpointable object."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from bench.budget import StepPlan

CLOCKS = ("train", "eval", "save")


@dataclass
class Stopwatch:
    """Accumulates wall time over start/stop segments; callers synchronize the device first."""

    total: float = 0.0
    _since: float | None = field(default=None, repr=False)

    def start(self) -> None:
        self._since = time.perf_counter()

    @property
    def elapsed(self) -> float:
        """Total so far, including a segment still running."""
        running = time.perf_counter() - self._since if self._since is not None else 0.0
        return self.total + running

    def stop(self) -> float:
        if self._since is not None:
            self.total += time.perf_counter() - self._since
            self._since = None
        return self.total


@dataclass
class LoopState:
    """Everything the loop carries besides model, optimizer and sampler.

    The runner creates it and hands it to the trainer, so after a failure it still knows the
    step reached and the memory sampled. All of it except ``total_steps`` and ``memory`` goes
    into checkpoints: the loss accumulators as they are (a resumed run adds the same floats in
    the same order) and the step times 10-19 (a cell resumed after step 19 keeps them).
    """

    # Sums of per-step losses since the last log, and of logged windows since the epoch began; on
    # the training device once start() has run.
    window_loss: torch.Tensor = field(default_factory=lambda: torch.zeros(()))
    epoch_loss: torch.Tensor = field(default_factory=lambda: torch.zeros(()))
    micro_batch: int = 0
    accum: int = 0
    step: int = 0  # optimizer steps completed
    total_steps: int = 0
    window_steps: int = 0
    epoch_steps: int = 0
    loss_floor: float = math.inf  # lowest logged train loss, for divergence_factor
    rows: list[dict[str, Any]] = field(default_factory=list)
    best_val_loss: float = math.inf
    best_epoch: int | None = None  # the epoch during which the best evaluation ran
    best_step: int | None = None  # the step of the best evaluation (any evaluation: epoch end or eval_every)
    best_train_loss: float | None = None
    resumed_at: list[int] = field(default_factory=list)
    step_times: dict[int, float] = field(default_factory=dict)  # seconds of optimizer steps 10-19
    clocks: dict[str, Stopwatch] = field(default_factory=lambda: {n: Stopwatch() for n in CLOCKS})
    memory: dict[str, Any] | None = None  # the sampled figures, once training has stopped
    plan: StepPlan | None = None  # the run's step plan, once built (a failed cell's summary prices its steps)

    _SCALARS = ("micro_batch", "accum", "step", "window_steps", "epoch_steps", "loss_floor", "rows",
                "best_val_loss", "best_epoch", "best_train_loss", "resumed_at")
    _ADDED = {"best_step": None}  # scalars newer than some checkpoints: their value when absent

    def start(self, device: torch.device, micro_batch: int, accum: int) -> None:
        """Begin a training session from step 0 (a resume then overwrites this with the saved state)."""
        fresh = LoopState(torch.zeros((), device=device), torch.zeros((), device=device), micro_batch, accum)
        self.__dict__.update(fresh.__dict__)

    def to_dict(self) -> dict[str, Any]:
        state = {name: getattr(self, name) for name in (*self._SCALARS, *self._ADDED)}
        state["window_loss"] = self.window_loss.detach().to("cpu", copy=True)
        state["epoch_loss"] = self.epoch_loss.detach().to("cpu", copy=True)
        state["clocks"] = {name: clock.total for name, clock in self.clocks.items()}
        # weights_only loading accepts str keys best; steps are stored as "10".."19".
        state["step_times"] = {str(step): seconds for step, seconds in self.step_times.items()}
        return state

    def load_dict(self, state: dict[str, Any]) -> None:
        for name in self._SCALARS:
            setattr(self, name, state[name])
        for name, absent in self._ADDED.items():
            setattr(self, name, state.get(name, absent))
        self.window_loss.copy_(state["window_loss"])
        self.epoch_loss.copy_(state["epoch_loss"])
        self.clocks = {name: Stopwatch(total) for name, total in state["clocks"].items()}
        self.step_times = {int(step): seconds for step, seconds in state.get("step_times", {}).items()}
