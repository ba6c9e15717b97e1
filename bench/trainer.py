"""Train and evaluate one cell, writing its metrics and summary to the result store.

Resuming: at every ``checkpoint_every`` steps, at each epoch end and on a graceful stop the
loop saves its whole state once that step is complete (model, optimizer, schedule, sampler
position, every RNG and :class:`LoopState`). The loss accumulators are saved as they are, so a
checkpoint in the middle of an epoch or of a ``log_every`` window keeps its partial sums and a
resumed run adds the same floats in the same order: its loss curve equals an uninterrupted
run's. Time spent writing checkpoints is not training time (``checkpoint_time_s``).
"""

from __future__ import annotations

import io
import math
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from bench import memory, rng, timing
from bench.cells import Cell, component_params
from bench.checkpoint import CHECKPOINT_DIR, CheckpointStore
from bench.data.loading import load_cell_data
from bench.data.samplers import RandomBatchSampler
from bench.evaluate import autocast_context, evaluate
from bench.loss import lm_loss
from bench.registry import Registry
from bench.store import BEST_WEIGHTS, CellRecord, atomic_write_bytes


class Diverged(RuntimeError):
    """The training loss became non-finite, or rose above ``divergence_factor`` x its running minimum."""

    def __init__(self, step: int, loss: float, reason: str | None = None):
        super().__init__(reason or f"train loss became {loss} at step {step}")
        self.step = step
        self.loss = loss


class Interrupted(Exception):
    """A graceful stop was requested; the cell saved its state after ``step``."""

    def __init__(self, step: int, cause: str):
        super().__init__(f"stopped by {cause} after step {step}; rerun the same command to resume")
        self.step = step


@dataclass
class Progress:
    """Where a cell is, for the runner to report when it fails."""

    step: int = 0
    total_steps: int = 0
    memory: dict[str, Any] | None = None  # the sampled figures, once training has stopped


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
    """Everything the loop carries from step to step besides model, optimizer and sampler."""

    window_loss: torch.Tensor  # sum of per-step losses since the last log, on the device
    epoch_loss: torch.Tensor  # sum of logged windows since the epoch began
    micro_batch: int
    accum: int
    step: int = 0  # optimizer steps completed
    window_steps: int = 0
    epoch_steps: int = 0
    loss_floor: float = math.inf  # lowest logged train loss, for divergence_factor
    rows: list[dict[str, Any]] = field(default_factory=list)
    best_val_loss: float = math.inf
    best_epoch: int | None = None
    best_train_loss: float | None = None
    resumed_at: list[int] = field(default_factory=list)
    clocks: dict[str, Stopwatch] = field(default_factory=lambda: {n: Stopwatch() for n in ("train", "eval", "save")})

    _SCALARS = ("micro_batch", "accum", "step", "window_steps", "epoch_steps", "loss_floor", "rows",
                "best_val_loss", "best_epoch", "best_train_loss", "resumed_at")

    def to_dict(self) -> dict[str, Any]:
        state = {name: getattr(self, name) for name in self._SCALARS}
        state["window_loss"] = self.window_loss.detach().to("cpu", copy=True)
        state["epoch_loss"] = self.epoch_loss.detach().to("cpu", copy=True)
        state["clocks"] = {name: clock.total for name, clock in self.clocks.items()}
        return state

    def load_dict(self, state: dict[str, Any]) -> None:
        for name in self._SCALARS:
            setattr(self, name, state[name])
        self.window_loss.copy_(state["window_loss"])
        self.epoch_loss.copy_(state["epoch_loss"])
        for name, total in state["clocks"].items():
            self.clocks[name] = Stopwatch(total)


def train_cell(cell: Cell, registry: Registry, hooks: Any, device: torch.device, record: CellRecord, *,
               stop: Any = None, progress: Progress | None = None, batching: tuple[int, int] | None = None,
               say: Callable[[str], None] = _stderr) -> dict[str, Any]:
    """Train ``cell``, resuming from its checkpoint if one is readable; evaluate the best weights
    on the test split; write and return the summary.

    ``stop.requested`` (see :mod:`bench.signals`) is read after each step; ``batching`` replaces
    ``(batch_size, grad_accum)`` for an out-of-memory retry with the same effective batch.
    """
    config = cell.config
    progress = progress if progress is not None else Progress()
    seed_everything(config["seed"])
    data = load_cell_data(config, registry, device)

    model_component = registry.get("model", config["model"])
    model = model_component.factory(data.vocab_size, **component_params(config, model_component)).to(device)
    optimizer_component = registry.get("optimizer", config["optimizer"])
    optimizer = optimizer_component.factory(model.parameters(), lr=config["lr"], device_type=device.type,
                                            **component_params(config, optimizer_component))

    seq_len = config["seq_len"]
    tokens_per_step = config["batch_size"] * config["grad_accum"] * seq_len
    steps_per_epoch = config["steps_per_epoch"] or max(1, data.splits["train"].numel() // tokens_per_step)
    total_steps = config["max_steps"] or config["epochs"] * steps_per_epoch
    schedule_component = registry.get("schedule", config["schedule"])
    schedule = schedule_component.factory(lr=config["lr"], total_steps=total_steps,
                                          **component_params(config, schedule_component))
    sampler = RandomBatchSampler(data.splits["train"], config["batch_size"], seq_len, seed=config["seed"])

    loop = LoopState(torch.zeros((), device=device), torch.zeros((), device=device),
                     config["batch_size"], config["grad_accum"])
    checkpoints = CheckpointStore(record.path / CHECKPOINT_DIR, cell.id, warn=say) if config["checkpoint"] else None
    parts = {"model": model, "optimizer": optimizer, "schedule": schedule, "sampler": sampler}
    best_state = _resume(checkpoints, parts, loop, say, cell.name) if checkpoints else None
    if batching is not None:
        loop.micro_batch, loop.accum = batching
    micro_batch, accum = loop.micro_batch, loop.accum
    sampler.batch_size = micro_batch
    progress.step, progress.total_steps = loop.step, total_steps
    eval_kwargs = {"seq_len": seq_len, "batch_size": config["eval_batch_size"] or micro_batch,
                   "dtype": config["dtype"], "loss_chunk": config["loss_chunk"]}

    counts = model.parameter_counts()
    flops_per_token = model.flops_per_token(seq_len)
    cell_info = cell.as_dict()
    hooks.bench_run_start(cell=cell_info, total_steps=total_steps)

    train_clock, eval_clock, save_clock = (loop.clocks[n] for n in ("train", "eval", "save"))
    vocab = data.vocab_size

    def run_validation(epoch: int, step: int) -> dict[str, float]:
        synchronize(device)
        train_clock.stop()
        eval_clock.start()
        result = evaluate(model, data.splits["valid"], **eval_kwargs)
        synchronize(device)
        eval_clock.stop()
        hooks.bench_evaluation(cell=cell_info, epoch=epoch, step=step, metrics=result)
        return result

    def persist(is_best: bool) -> None:
        """Metrics so far, then (when enabled) the checkpoint; never counted as training time."""
        synchronize(device)
        train_clock.stop()
        save_clock.start()
        record.write_metrics(loop.rows)
        if checkpoints is not None:
            checkpoints.save(_checkpoint_state(parts, loop), step=loop.step, best=is_best)
        save_clock.stop()
        train_clock.start()

    memory.reset_peak(device)
    step_timer = timing.StepWindowTimer(device)  # synchronises only around steps 10..19
    model.train()
    memory_sampler = memory.start_sampling(device, config["memory_interval_ms"])
    try:
        train_clock.start()
        for step in range(loop.step, total_steps):
            step_timer.begin(step)
            lr = schedule(step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            for _ in range(accum):
                x, y = sampler.next_batch()
                with autocast_context(device, config["dtype"]):
                    # lm_loss frees the (B, T, V) logits before returning (or never builds them
                    # whole, with loss_chunk), so none outlive the step into the next forward.
                    loss = lm_loss(model, x, y, chunk=config["loss_chunk"])
                (loss / accum).backward()
                loop.window_loss += loss.detach() / accum
            if config["grad_clip"] > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config["grad_clip"])
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step_timer.end(step)
            loop.window_steps += 1
            done = loop.step = progress.step = step + 1

            # Reading the loss forces a host-device sync, so it happens every log_every steps only.
            epoch_end = done % steps_per_epoch == 0 or done == total_steps
            if done % config["log_every"] == 0 or epoch_end:
                mean_loss = loop.window_loss.item() / loop.window_steps
                check_divergence(done, mean_loss, loop.loss_floor, config["divergence_factor"])
                loop.loss_floor = min(loop.loss_floor, mean_loss)
                loop.epoch_loss += loop.window_loss
                loop.epoch_steps += loop.window_steps
                loop.rows.append({"kind": "log", "step": done, "train_loss": mean_loss, "lr": lr})
                hooks.bench_log_step(cell=cell_info, step=done, metrics={
                    "train_loss": mean_loss, "lr": lr, "elapsed_s": train_clock.elapsed})
                loop.window_loss.zero_()
                loop.window_steps = 0

            if config["eval_every"] and done % config["eval_every"] == 0 and not epoch_end:
                result = run_validation(epoch=math.ceil(done / steps_per_epoch), step=done)
                loop.rows.append({"kind": "step", "step": done, "val_loss": result["loss"], "val_ppl": result["ppl"],
                                  "train_time_s": train_clock.total})
                train_clock.start()

            new_best = False
            if epoch_end:
                epoch = math.ceil(done / steps_per_epoch)
                train_loss = loop.epoch_loss.item() / max(loop.epoch_steps, 1)
                result = run_validation(epoch=epoch, step=done)
                loop.rows.append({"kind": "epoch", "epoch": epoch, "step": done, "train_loss": train_loss,
                                  "train_ppl": _ppl(train_loss), "val_loss": result["loss"], "val_ppl": result["ppl"],
                                  "train_time_s": train_clock.total, "eval_time_s": eval_clock.total})
                if result["loss"] < loop.best_val_loss:
                    loop.best_val_loss, loop.best_epoch, loop.best_train_loss = result["loss"], epoch, train_loss
                    best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
                    new_best = True
                loop.epoch_loss.zero_()
                loop.epoch_steps = 0
                train_clock.start()

            stopping = stop is not None and stop.requested
            every = config["checkpoint_every"]
            if epoch_end or stopping or (every and done % every == 0):
                persist(new_best)
            if stopping:
                raise Interrupted(done, getattr(stop, "cause", "a stop request"))
        train_clock.stop()
    finally:
        # Also on failure: the thread stops now, and an out-of-memory cell still reports its memory.
        sampled = memory_sampler.stop()
        progress.memory = memory.run_memory(device, sampled)
    peak = progress.memory
    gpu_name = memory.device_name(device, sampled)
    if best_state is None:
        raise Diverged(loop.step, loop.best_val_loss, f"validation loss was never finite (last {loop.best_val_loss})")

    model.load_state_dict(best_state)
    _save_weights(record, best_state)
    eval_clock.start()
    test = evaluate(model, data.splits["test"], **eval_kwargs)
    synchronize(device)
    eval_clock.stop()

    train_tokens = total_steps * tokens_per_step
    summary = {
        **cell_info,
        "status": "ok",
        "device": str(device),
        "torch": torch.__version__,
        "vocab_size": vocab,
        "params_total": counts["total"],
        "params_non_embedding": counts["non_embedding"],
        "flops_per_token": flops_per_token,
        "train_flops": flops_per_token * train_tokens,
        "steps": total_steps,
        "epochs": math.ceil(total_steps / steps_per_epoch),
        "train_tokens": train_tokens,
        "best_epoch": loop.best_epoch,
        "best_val_loss": loop.best_val_loss,
        "best_val_ppl": _ppl(loop.best_val_loss),
        "train_ppl_at_best": _ppl(loop.best_train_loss),
        "test_loss": test["loss"],
        "test_ppl": test["ppl"],
        "eval_tokens": {"valid": int(data.splits["valid"].numel() - 1), "test": test["tokens"]},
        "entropy_floor_ppl": math.exp(data.entropy_rate) if data.entropy_rate is not None else None,
        "text_tokenizer": config["tokenizer"] if data.text else None,
        "train_time_s": train_clock.total,
        "eval_time_s": eval_clock.total,
        "checkpoint_time_s": save_clock.total,
        "tokens_per_s": train_tokens / train_clock.total if train_clock.total > 0 else None,
        "micro_batch_size": micro_batch,
        "grad_accum_used": accum,
        "resumed_at_steps": loop.resumed_at,
        "memory": peak,
        "gpu_name": gpu_name,
        **step_timer.result(),
        **timing.throughput(train_flops=flops_per_token * train_tokens, train_time_s=train_clock.total,
                            steps=total_steps, epochs=math.ceil(total_steps / steps_per_epoch),
                            peak_tflops_setting=config["peak_tflops"], device_name=gpu_name,
                            precision=timing.matmul_precision(device, config["dtype"])),
    }
    record.write_summary(summary)
    if checkpoints is not None:
        checkpoints.clear()  # the summary is the result now; the training state is no longer needed
    hooks.bench_run_end(cell=cell_info, summary=summary)
    return summary


def check_divergence(step: int, mean_loss: float, floor: float, factor: float) -> None:
    """Raise :class:`Diverged` for a non-finite loss, or (``factor > 0``) one above factor x floor."""
    if not math.isfinite(mean_loss):
        raise Diverged(step, mean_loss)
    if factor > 0 and mean_loss > factor * floor:
        raise Diverged(step, mean_loss, f"train loss {mean_loss:.4g} at step {step} exceeds divergence_factor "
                                        f"{factor:g} x its running minimum {floor:.4g}")


def _checkpoint_state(parts: dict[str, Any], loop: LoopState) -> dict[str, Any]:
    schedule = parts["schedule"]
    # Built-in schedules are pure functions of the step; a plugin's stateful one may expose state_dict.
    schedule_state = schedule.state_dict() if hasattr(schedule, "state_dict") else None
    return {"model": parts["model"].state_dict(), "optimizer": parts["optimizer"].state_dict(),
            "schedule": schedule_state, "sampler": parts["sampler"].state_dict(), "rng": rng.capture(),
            "loop": loop.to_dict()}


def _resume(checkpoints: CheckpointStore, parts: dict[str, Any], loop: LoopState,
            say: Callable[[str], None], name: str) -> dict[str, torch.Tensor] | None:
    """Load the newest readable checkpoint into ``parts`` and ``loop``; return the best weights."""
    restored = checkpoints.load()
    if restored is None:
        return None
    state, model = restored.state, parts["model"]
    mismatch = _state_mismatch(model.state_dict(), state["model"])
    if mismatch:
        say(f"warning: {name}: checkpoint {restored.path} does not fit the model ({mismatch}); "
            "starting this cell from scratch")
        checkpoints.clear()
        return None
    model.load_state_dict(state["model"])
    parts["optimizer"].load_state_dict(state["optimizer"])
    if state["schedule"] is not None:
        parts["schedule"].load_state_dict(state["schedule"])
    parts["sampler"].load_state_dict(state["sampler"])
    loop.load_dict(state["loop"])
    rng.restore(state["rng"])
    loop.resumed_at.append(loop.step)
    say(f"  {name}: resuming after step {loop.step} from the {restored.source} checkpoint")
    if loop.best_epoch is None:
        return None
    return restored.best["model"]


def _state_mismatch(expected: dict[str, torch.Tensor], saved: dict[str, torch.Tensor]) -> str | None:
    if set(expected) != set(saved):
        return f"keys differ: {sorted(set(expected) ^ set(saved))[:3]}"
    for key, tensor in expected.items():
        if tuple(saved[key].shape) != tuple(tensor.shape):
            return f"{key} has shape {tuple(saved[key].shape)}, the model {tuple(tensor.shape)}"
    return None


def _ppl(loss: float) -> float:
    return math.exp(min(loss, 700.0))


def _save_weights(record: CellRecord, state: dict[str, torch.Tensor]) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(record.path / BEST_WEIGHTS, buffer.getvalue())
