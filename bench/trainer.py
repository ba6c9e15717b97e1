"""Train and evaluate one cell, writing its metrics and summary to the result store."""

from __future__ import annotations

import io
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from bench import memory, timing
from bench.cells import Cell, component_params
from bench.data.loading import load_cell_data
from bench.data.samplers import RandomBatchSampler
from bench.evaluate import autocast_context, evaluate
from bench.registry import Registry
from bench.store import BEST_WEIGHTS, CellRecord, atomic_write_bytes


class Diverged(RuntimeError):
    """The training loss became non-finite."""

    def __init__(self, step: int, loss: float):
        super().__init__(f"train loss became {loss} at step {step}")
        self.step = step


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


def train_cell(cell: Cell, registry: Registry, hooks: Any, device: torch.device,
               record: CellRecord) -> dict[str, Any]:
    config = cell.config
    seed_everything(config["seed"])
    data = load_cell_data(config, registry, device)

    model_component = registry.get("model", config["model"])
    model = model_component.factory(data.vocab_size, **component_params(config, model_component)).to(device)
    optimizer_component = registry.get("optimizer", config["optimizer"])
    optimizer = optimizer_component.factory(model.parameters(), lr=config["lr"], device_type=device.type,
                                            **component_params(config, optimizer_component))

    micro_batch, accum, seq_len = config["batch_size"], config["grad_accum"], config["seq_len"]
    tokens_per_step = micro_batch * accum * seq_len
    steps_per_epoch = config["steps_per_epoch"] or max(1, data.splits["train"].numel() // tokens_per_step)
    total_steps = config["max_steps"] or config["epochs"] * steps_per_epoch
    schedule_component = registry.get("schedule", config["schedule"])
    schedule = schedule_component.factory(lr=config["lr"], total_steps=total_steps,
                                          **component_params(config, schedule_component))
    sampler = RandomBatchSampler(data.splits["train"], micro_batch, seq_len, seed=config["seed"])
    eval_kwargs = {"seq_len": seq_len, "batch_size": config["eval_batch_size"] or micro_batch,
                   "dtype": config["dtype"]}

    counts = model.parameter_counts()
    flops_per_token = model.flops_per_token(seq_len)
    cell_info = cell.as_dict()
    hooks.bench_run_start(cell=cell_info, total_steps=total_steps)

    train_clock, eval_clock = Stopwatch(), Stopwatch()
    rows: list[dict[str, Any]] = []
    best: dict[str, Any] = {"val_loss": math.inf}
    window_loss = torch.zeros((), device=device)
    epoch_loss = torch.zeros((), device=device)
    window_steps = epoch_steps = 0
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

    memory.reset_peak(device)
    step_timer = timing.StepWindowTimer(device)  # synchronises only around steps 10..19
    model.train()
    memory_sampler = memory.start_sampling(device, config["memory_interval_ms"])
    train_clock.start()
    for step in range(total_steps):
        step_timer.begin(step)
        lr = schedule(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        for _ in range(accum):
            x, y = sampler.next_batch()
            with autocast_context(device, config["dtype"]):
                logits = model(x)
            loss = F.cross_entropy(logits.float().reshape(-1, vocab), y.reshape(-1))
            (loss / accum).backward()
            window_loss += loss.detach() / accum
        if config["grad_clip"] > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config["grad_clip"])
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step_timer.end(step)
        window_steps += 1
        done = step + 1

        # Reading the loss forces a host-device sync, so it happens every log_every steps only.
        epoch_end = done % steps_per_epoch == 0 or done == total_steps
        if done % config["log_every"] == 0 or epoch_end:
            mean_loss = window_loss.item() / window_steps
            if not math.isfinite(mean_loss):
                raise Diverged(done, mean_loss)
            epoch_loss += window_loss
            epoch_steps += window_steps
            hooks.bench_log_step(cell=cell_info, step=done, metrics={
                "train_loss": mean_loss, "lr": lr, "elapsed_s": train_clock.elapsed})
            window_loss.zero_()
            window_steps = 0

        if config["eval_every"] and done % config["eval_every"] == 0 and not epoch_end:
            result = run_validation(epoch=math.ceil(done / steps_per_epoch), step=done)
            rows.append({"kind": "step", "step": done, "val_loss": result["loss"], "val_ppl": result["ppl"],
                         "train_time_s": train_clock.total})
            train_clock.start()

        if epoch_end:
            epoch = math.ceil(done / steps_per_epoch)
            train_loss = epoch_loss.item() / max(epoch_steps, 1)
            result = run_validation(epoch=epoch, step=done)
            rows.append({"kind": "epoch", "epoch": epoch, "step": done, "train_loss": train_loss,
                         "train_ppl": _ppl(train_loss), "val_loss": result["loss"], "val_ppl": result["ppl"],
                         "train_time_s": train_clock.total, "eval_time_s": eval_clock.total})
            record.write_metrics(rows)
            if result["loss"] < best["val_loss"]:
                best = {"val_loss": result["loss"], "epoch": epoch, "train_loss": train_loss,
                        "state": {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}}
            epoch_loss.zero_()
            epoch_steps = 0
            train_clock.start()
    train_clock.stop()
    sampled = memory_sampler.stop()
    peak = memory.run_memory(device, sampled)
    gpu_name = memory.device_name(device, sampled)

    model.load_state_dict(best["state"])
    _save_weights(record, best["state"])
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
        "epochs": rows[-1]["epoch"] if rows else 0,
        "train_tokens": train_tokens,
        "best_epoch": best["epoch"],
        "best_val_loss": best["val_loss"],
        "best_val_ppl": _ppl(best["val_loss"]),
        "train_ppl_at_best": _ppl(best["train_loss"]),
        "test_loss": test["loss"],
        "test_ppl": test["ppl"],
        "eval_tokens": {"valid": int(data.splits["valid"].numel() - 1), "test": test["tokens"]},
        "entropy_floor_ppl": math.exp(data.entropy_rate) if data.entropy_rate is not None else None,
        "text_tokenizer": config["tokenizer"] if data.text else None,
        "train_time_s": train_clock.total,
        "eval_time_s": eval_clock.total,
        "tokens_per_s": train_tokens / train_clock.total if train_clock.total > 0 else None,
        "memory": peak,
        "gpu_name": gpu_name,
        **step_timer.result(),
        **timing.throughput(train_flops=flops_per_token * train_tokens, train_time_s=train_clock.total,
                            steps=total_steps, epochs=rows[-1]["epoch"] if rows else 0,
                            peak_tflops_setting=config["peak_tflops"], device_name=gpu_name,
                            precision=timing.matmul_precision(device, config["dtype"])),
    }
    record.write_summary(summary)
    hooks.bench_run_end(cell=cell_info, summary=summary)
    return summary


def _ppl(loss: float) -> float:
    return math.exp(min(loss, 700.0))


def _save_weights(record: CellRecord, state: dict[str, torch.Tensor]) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(record.path / BEST_WEIGHTS, buffer.getvalue())
