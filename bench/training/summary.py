"""The end of a cell: test the best weights, then write the summary the reports read."""

from __future__ import annotations

import io
import math
from typing import Any

import torch

from bench import memory, timing
from bench.budget import budget_record
from bench.data.samplers import scored_targets
from bench.evaluation.perplexity import perplexity
from bench.fileio import atomic_write_bytes
from bench.store import BEST_WEIGHTS
from bench.training.outcomes import Diverged
from bench.training.run import Run


def finish(run: Run, stopped_by: str | None) -> dict[str, Any]:
    """Evaluate the best epoch's weights on the test split, save them, write and return the summary."""
    loop = run.loop
    if run.best_weights is None:
        raise Diverged(loop.step, loop.best_val_loss, f"validation loss was never finite (last {loop.best_val_loss})")
    run.model.load_state_dict(run.best_weights)
    _save_weights(run, run.best_weights)
    eval_clock = loop.clocks["eval"]
    eval_clock.start()
    test = run.evaluate("test")
    timing.synchronize(run.device)
    eval_clock.stop()
    summary = build_summary(run, test, stopped_by)
    run.record.write_summary(summary)
    if run.checkpoints is not None:
        run.checkpoints.clear()  # the summary is the result now; the training state is no longer needed
    run.hooks.bench_run_end(cell=run.info, summary=summary)
    return summary


def evaluation_windows(config: dict[str, Any], limits: dict[str, int] | None = None) -> str:
    """Which windows the perplexities were computed on, in words (stored with every summary).
    ``limits`` (split -> windows scored, 0 for all) adds which part of each split was scored."""
    stride = config["eval_stride"] or config["seq_len"]
    if stride == config["seq_len"]:
        shape = f"non-overlapping windows of {config['seq_len']} tokens, each starting without context"
    else:
        shape = (f"sliding windows of {config['seq_len']} tokens, stride {stride}: each token scored once with "
                 f"at least {config['seq_len'] - stride} tokens of context")
    if not limits or not any(limits.values()):
        return shape
    parts = [f"{split}: {evaluation_scope(limit)}" for split, limit in limits.items()]
    return f"{shape}; {', '.join(parts)}"


def evaluation_scope(limit: int) -> str:
    """``full split``, or the fixed subset a bounded evaluation scores."""
    return "full split" if limit <= 0 else f"{limit:,} fixed windows evenly spaced over the split"


def build_summary(run: Run, test: dict[str, float], stopped_by: str | None) -> dict[str, Any]:
    config, loop, plan, data = run.config, run.loop, run.plan, run.data
    steps = loop.step
    train_time = loop.clocks["train"].total
    train_tokens = steps * plan.tokens_per_step
    epochs = math.ceil(steps / plan.steps_per_epoch)
    counts = run.model.parameter_counts()
    gpu_name = memory.device_name(run.device, loop.memory or {})
    limits = {split: run.window_limit(split) for split in ("valid", "test")}
    best_row = next((r for r in loop.rows if r.get("kind") == "epoch" and r.get("epoch") == loop.best_epoch), {})
    return {
        **run.info,
        "status": "ok",
        "device": str(run.device),
        "torch": torch.__version__,
        "vocab_size": data.vocab_size,
        "params_total": counts["total"],
        "params_non_embedding": counts["non_embedding"],
        "flops_per_token": plan.flops_per_token,
        "train_flops": plan.flops_per_token * train_tokens,
        "steps": steps,
        "planned_steps": plan.total_steps,
        "tokens_per_step": plan.tokens_per_step,
        "epochs": epochs,
        "train_tokens": train_tokens,
        "best_epoch": loop.best_epoch,
        "best_val_loss": loop.best_val_loss,
        "best_val_ppl": perplexity(loop.best_val_loss),
        "best_val_word_ppl": best_row.get("val_word_ppl"),
        "train_ppl_at_best": perplexity(loop.best_train_loss) if loop.best_train_loss is not None else None,
        "test_loss": test["loss"],
        "test_ppl": test["ppl"],
        "test_word_ppl": test.get("word_ppl"),
        "eval_windows": evaluation_windows(config, limits),
        "eval_limits": limits,  # windows each pass scored per split; 0 = the full split
        "eval_tokens": {"valid": scored_targets(data.splits["valid"].lengths, config["seq_len"],
                                                config["eval_stride"] or None, limits["valid"]),
                        "test": test["tokens"]},
        "eval_words": data.words,
        "entropy_floor_ppl": math.exp(data.entropy_rate) if data.entropy_rate is not None else None,
        "text_tokenizer": config["tokenizer"] if data.text else None,
        "train_time_s": train_time,
        "eval_time_s": loop.clocks["eval"].total,
        "checkpoint_time_s": loop.clocks["save"].total,
        "compile_time_s": run.compile_time_s,  # the compiling warm-up step (compile = true), else None
        "tokens_per_s": train_tokens / train_time if train_time > 0 else None,
        "micro_batch_size": loop.micro_batch,
        "grad_accum_used": loop.accum,
        "resumed_at_steps": loop.resumed_at,
        "memory": loop.memory,
        "gpu_name": gpu_name,
        **budget_record(config, plan, steps, train_time, stopped_by),
        **timing.window_result(loop.step_times),
        **timing.throughput(train_flops=plan.flops_per_token * train_tokens, train_time_s=train_time,
                            steps=steps, epochs=epochs, peak_tflops_setting=config["peak_tflops"],
                            device_name=gpu_name,
                            precision=timing.matmul_precision(run.device, config["dtype"], config["tf32"])),
    }


def _save_weights(run: Run, state: dict[str, torch.Tensor]) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(run.record.path / BEST_WEIGHTS, buffer.getvalue())
