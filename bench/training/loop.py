"""Train one cell: build the run, step until the plan or a budget ends it, write the summary.

Resuming: at every ``checkpoint_every`` steps, at each epoch end, on a graceful stop and at
``halt_at_step`` the loop saves its whole state once that step is complete (model, optimizer,
schedule, sampler position, every RNG and the :class:`~bench.training.state.LoopState`). The loss
accumulators are saved as they are, so a checkpoint in the middle of an epoch or of a ``log_every``
window keeps its partial sums and a resumed run adds the same floats in the same order: its loss
curve equals an uninterrupted run's. Time spent writing checkpoints is not training time. With
``checkpoint_async`` the state is copied and written by a background thread; the loop waits for that
write before the next save and before it returns or raises (:func:`finish_saving`).

The device is synchronised only where a number must be read: at logging steps (the train loss),
around steps 10-19 (their exact times) and at evaluations.
"""

from __future__ import annotations

import math
import sys
from typing import Any, Callable

import torch

from bench import memory, timing
from bench.accel import autocast_context
from bench.cells import Cell
from bench.evaluation.perplexity import perplexity
from bench.loss import lm_loss
from bench.optimizer_modes import evaluating, training
from bench.registry import Registry
from bench.store import CellRecord
from bench.training.outcomes import Halted, Interrupted, check_divergence
from bench.training.run import Run, build_run, compile_warm_up
from bench.training.state import LoopState
from bench.training.summary import finish


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def train_cell(cell: Cell, registry: Registry, hooks: Any, device: torch.device, record: CellRecord, *,
               stop: Any = None, loop: LoopState | None = None, batching: tuple[int, int] | None = None,
               say: Callable[[str], None] = _stderr) -> dict[str, Any]:
    """Train ``cell`` (resuming from its checkpoint if one is readable), evaluate the best weights
    on the test split, write and return the summary.

    ``stop.requested`` (see :mod:`bench.signals`) is read after each step. ``loop`` is filled in as
    training goes, so a caller still knows the step and memory reached when this raises.
    """
    run = build_run(cell, registry, hooks, device, record, loop if loop is not None else LoopState(),
                    batching, say)
    hooks.bench_run_start(cell=run.info, total_steps=run.plan.total_steps)
    stopped_by = train_steps(run, stop)
    return finish(run, stopped_by)


def train_steps(run: Run, stop: Any) -> str | None:
    """The step loop; returns the budget that ended training early, if one did."""
    loop, plan, config = run.loop, run.plan, run.config
    _halt_if_already_there(run)
    train_clock = loop.clocks["train"]
    step_timer = timing.StepWindowTimer(run.device, times=loop.step_times)  # syncs only around steps 10-19
    memory.reset_peak(run.device)
    run.model.train()
    training(run.optimizer)  # a Schedule-Free optimizer starts (and a checkpoint resumes) in eval mode
    sampler = memory.start_sampling(run.device, config["memory_interval_ms"])
    stopped_by = None
    if run.config["compile"] and loop.step < plan.total_steps:
        run.compile_time_s = compile_warm_up(run)  # neither training nor step time
    try:
        train_clock.start()
        for step in range(loop.step, plan.total_steps):
            step_timer.begin(step)
            lr = set_lr(run.optimizer, run.schedule(step))
            train_step(run)
            step_timer.end(step)
            done = loop.step = step + 1
            loop.window_steps += 1
            stopped_by = plan.exhausted(train_clock.elapsed)

            epoch_end = done % plan.steps_per_epoch == 0 or done == plan.total_steps or stopped_by is not None
            halt_now = done == config["halt_at_step"] and done < plan.total_steps and stopped_by is None
            if done % config["log_every"] == 0 or epoch_end:
                log_window(run, done, lr)  # reads the loss: a device sync, so only every log_every steps
            new_best = False
            if epoch_end:
                new_best = end_epoch(run, done)
            elif halt_now or (config["eval_every"] and done % config["eval_every"] == 0):
                validate_midway(run, done)

            stopping = stop is not None and stop.requested
            every = config["checkpoint_every"]
            if epoch_end or stopping or halt_now or (every and done % every == 0):
                persist(run, new_best)
            if stopping:
                raise Interrupted(done, getattr(stop, "cause", "a stop request"))
            if halt_now:
                raise Halted(done, last_validation(loop))
            if stopped_by is not None:
                break
        train_clock.stop()
    finally:
        # Also on failure: the thread stops now, and an out-of-memory cell still reports its memory.
        loop.memory = memory.run_memory(run.device, sampler.stop())
        finish_saving(run)
    return stopped_by


def finish_saving(run: Run) -> None:
    """Wait for a background checkpoint write before anything reports on or reads the cell: the
    summary, a graceful stop's exit, a retry that resumes. A write that failed raises here (as a
    synchronous save would have), in place of whatever ended the loop."""
    if run.checkpoints is None:
        return
    # The train clock is stopped here, or running in a segment that an exception keeps out of its total.
    save_clock = run.loop.clocks["save"]
    save_clock.start()
    try:
        run.checkpoints.wait()
    finally:
        save_clock.stop()


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> float:
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


def train_step(run: Run) -> None:
    """One optimizer step over ``accum`` micro-batches; the loss stays on the device.

    ``run.scaler`` scales the loss for float16 (a disabled scaler passes everything through)."""
    loop, model, scaler, config = run.loop, run.model, run.scaler, run.config
    for _ in range(loop.accum):
        x, y = run.sampler.next_batch()
        with autocast_context(run.device, config["dtype"]):
            # lm_loss drops the (B, T, V) logits before returning (with loss_chunk it never builds
            # them whole), so none live on into the next micro-batch's forward.
            loss = lm_loss(model, x, y, chunk=config["loss_chunk"])
        scaler.scale(loss / loop.accum).backward()
        loop.window_loss += loss.detach() / loop.accum
    if config["grad_clip"] > 0:
        scaler.unscale_(run.optimizer)  # clip the true gradients, not the scaled ones
        torch.nn.utils.clip_grad_norm_(model.parameters(), config["grad_clip"])
    scaler.step(run.optimizer)  # skipped (and the scale lowered) if float16 gradients overflowed
    scaler.update()
    run.optimizer.zero_grad(set_to_none=True)


def log_window(run: Run, done: int, lr: float) -> None:
    """Read the mean train loss since the last log, check it, record it and tell the loggers."""
    loop, config = run.loop, run.config
    mean_loss = loop.window_loss.item() / loop.window_steps
    check_divergence(done, mean_loss, floor=loop.loss_floor, factor=config["divergence_factor"],
                     ceiling=run.loss_ceiling)
    loop.loss_floor = min(loop.loss_floor, mean_loss)
    loop.epoch_loss += loop.window_loss
    loop.epoch_steps += loop.window_steps
    loop.rows.append({"kind": "log", "step": done, "train_loss": mean_loss, "lr": lr})
    run.hooks.bench_log_step(cell=run.info, step=done, metrics={
        "train_loss": mean_loss, "lr": lr, "elapsed_s": loop.clocks["train"].elapsed})
    loop.window_loss.zero_()
    loop.window_steps = 0


def validate(run: Run, epoch: int, step: int) -> dict[str, float]:
    """A validation pass, timed on the eval clock and not the train clock."""
    train_clock, eval_clock = run.loop.clocks["train"], run.loop.clocks["eval"]
    timing.synchronize(run.device)
    train_clock.stop()
    eval_clock.start()
    result = run.evaluate("valid")
    timing.synchronize(run.device)
    eval_clock.stop()
    run.hooks.bench_evaluation(cell=run.info, epoch=epoch, step=step, metrics=result)
    train_clock.start()
    return result


def validate_midway(run: Run, done: int) -> None:
    with evaluating(run.optimizer):
        result = validate(run, epoch=math.ceil(done / run.plan.steps_per_epoch), step=done)
    run.loop.rows.append({"kind": "step", "step": done, **_validation_fields(result),
                          "train_time_s": run.loop.clocks["train"].total})


def end_epoch(run: Run, done: int) -> bool:
    """Validate, record the epoch, keep the weights if they are the best so far (returns whether)."""
    loop = run.loop
    epoch = math.ceil(done / run.plan.steps_per_epoch)
    train_loss = loop.epoch_loss.item() / max(loop.epoch_steps, 1)
    with evaluating(run.optimizer):  # the weights evaluated are the ones kept as the best
        result = validate(run, epoch=epoch, step=done)
        new_best = result["loss"] < loop.best_val_loss  # also false for a NaN loss
        if new_best:
            run.best_weights = {k: v.detach().to("cpu", copy=True) for k, v in run.model.state_dict().items()}
    loop.rows.append({"kind": "epoch", "epoch": epoch, "step": done, "train_loss": train_loss,
                      "train_ppl": perplexity(train_loss), **_validation_fields(result),
                      "train_time_s": loop.clocks["train"].total, "eval_time_s": loop.clocks["eval"].total})
    loop.epoch_loss.zero_()
    loop.epoch_steps = 0
    if new_best:
        loop.best_val_loss, loop.best_epoch, loop.best_train_loss = result["loss"], epoch, train_loss
    return new_best


def _validation_fields(result: dict[str, float]) -> dict[str, float]:
    fields = {"val_loss": result["loss"], "val_ppl": result["ppl"]}
    if "word_ppl" in result:
        fields["val_word_ppl"] = result["word_ppl"]
    return fields


def last_validation(loop: LoopState) -> dict[str, float]:
    """The most recent validation row's figures (for a halted cell's summary)."""
    row: dict[str, Any] = next((r for r in reversed(loop.rows) if "val_loss" in r), {})
    return {k: row[k] for k in ("val_loss", "val_ppl", "val_word_ppl") if k in row}


def _halt_if_already_there(run: Run) -> None:
    """A cell resumed at exactly its ``halt_at_step`` has nothing to do but say so again."""
    halt, loop = run.config["halt_at_step"], run.loop
    if 0 < halt <= loop.step < run.plan.total_steps:
        raise Halted(loop.step, last_validation(loop))


def persist(run: Run, is_best: bool) -> None:
    """Metrics so far, then (when enabled) the checkpoint; never counted as training time."""
    train_clock, save_clock = run.loop.clocks["train"], run.loop.clocks["save"]
    timing.synchronize(run.device)
    train_clock.stop()
    save_clock.start()
    run.record.write_metrics(run.loop.rows)
    if run.checkpoints is not None:
        with evaluating(run.optimizer):  # save() copies the state before it returns
            run.checkpoints.save(run.checkpoint_state(), step=run.loop.step, best=is_best)
    save_clock.stop()
    train_clock.start()
