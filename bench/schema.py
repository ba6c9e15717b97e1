"""Keys the harness itself understands in a cell, with defaults and value checks.

Model, optimizer, dataset and schedule hyperparameters are not listed here: each plugin
component declares its own in ``Component.defaults``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from bench.errors import ConfigError


@dataclass(frozen=True)
class Key:
    default: Any
    help: str
    check: Callable[[Any], bool] | None = None
    requirement: str = ""


def _positive(v):
    return v > 0


def _non_negative(v):
    return v >= 0


def _at_least_minus_one(v):
    return v >= -1


TRAINER_KEYS: dict[str, Key] = {
    "model": Key(None, "registered model name"),
    "optimizer": Key(None, "registered optimizer name"),
    "dataset": Key("synthetic", "registered dataset name"),
    "tokenizer": Key("gpt2", "tokenizer for text datasets (ignored by token datasets)"),
    "schedule": Key("constant", "learning-rate schedule name"),
    "seed": Key(0, "seed for init, batch sampling and dropout"),
    "lr": Key(1e-3, "peak learning rate", _positive, "> 0"),
    "seq_len": Key(64, "tokens per training sequence", _positive, ">= 1"),
    "batch_size": Key(16, "sequences per micro-batch", _positive, ">= 1"),
    "grad_accum": Key(1, "micro-batches per optimizer step", _positive, ">= 1"),
    "epochs": Key(1, "training epochs (ignored when max_steps > 0)", _positive, ">= 1"),
    "max_steps": Key(0, "optimizer steps in total; 0 means epochs x steps_per_epoch", _non_negative, ">= 0"),
    "steps_per_epoch": Key(0, "optimizer steps per epoch; 0 means one pass over the train tokens",
                           _non_negative, ">= 0"),
    "grad_clip": Key(0.0, "max global gradient norm; 0 disables clipping", _non_negative, ">= 0"),
    "eval_every": Key(0, "also evaluate every N steps; 0 means only at epoch ends", _non_negative, ">= 0"),
    "eval_stride": Key(0, "evaluation window stride; 0 means seq_len (non-overlapping windows, each starting "
                       "without context); less slides the window so every token gets >= seq_len - stride "
                       "tokens of context", _non_negative, ">= 0"),
    "val_windows": Key(0, "windows each validation pass scores: 0 = auto (the whole split up to 4,194,304 tokens, "
                       "else a fixed subset of 4,194,304 // seq_len windows), -1 = the whole split, N = N windows "
                       "evenly spaced over the split, the same on every pass", _at_least_minus_one, ">= -1"),
    "test_windows": Key(0, "windows the test pass scores; same values as val_windows", _at_least_minus_one, ">= -1"),
    "eval_batch_size": Key(0, "sequences per evaluation batch; 0 means the device's default (CPU: batch_size, "
                           "CUDA: 2 x batch_size; see bench.accel)", _non_negative, ">= 0"),
    "target_loss": Key(0.0, "val loss (nats) that the report's time-to-target table measures against; 0 means none",
                       _non_negative, ">= 0"),
    "target_ppl": Key(0.0, "the same target as a validation perplexity (used when target_loss is 0); 0 means none",
                      lambda v: v == 0 or v > 1, "0 (off) or > 1"),
    "log_every": Key(25, "read the train loss (a device sync) every N steps", _positive, ">= 1"),
    "loss_chunk": Key(0, "positions whose vocabulary logits exist at once in the training and evaluation loss "
                      "(chunked cross-entropy, same loss; needs a model with hidden/head); 0 computes full logits",
                      _non_negative, ">= 0"),
    "dtype": Key("float32", "compute dtype: float32, bfloat16 (autocast) or float16 (autocast with a GradScaler)",
                 lambda v: v in ("float32", "bfloat16", "float16"), "'float32', 'bfloat16' or 'float16'"),
    "tf32": Key(True, "CUDA: float32 matmuls and convolutions on TF32 tensor cores (no effect on CPU)"),
    "pin_memory": Key(False, "CUDA: keep the training tokens in host memory, copy each batch from pinned memory "
                      "with non_blocking one step ahead (for corpora too large for the device); no effect on CPU"),
    "compile": Key(False, "torch.compile the model (compile time reported as compile_time_s, not step time)"),
    "memory_interval_ms": Key(100, "sample GPU/process memory every N ms while training; 0 disables",
                              _non_negative, ">= 0"),
    "peak_tflops": Key(0.0, "device peak TFLOP/s for MFU; 0 means look the GPU up in bench.timing's table",
                       _non_negative, ">= 0"),
    "max_checkpoint_mb": Key(0.0, "reject at resolve time a configuration whose weights (best.pt) exceed this many MB "
                             "(10^6 bytes); 0 disables", _non_negative, ">= 0"),
    "checkpoint": Key(True, "save resumable training state at epoch ends and every checkpoint_every steps"),
    "checkpoint_every": Key(0, "also checkpoint every N steps; 0 means at epoch ends only", _non_negative, ">= 0"),
    "checkpoint_async": Key(False, "write checkpoints from a background thread: the state is copied to CPU memory "
                            "at the save and training goes on while it is written (same files, same resume)"),
    "divergence_factor": Key(0.0, "stop as diverged once the logged train loss exceeds k x its running minimum; "
                             "0 disables (a non-finite loss always stops)", lambda v: v == 0 or v > 1,
                             "0 (off) or > 1"),
    "divergence_margin": Key(5.0, "stop as diverged once the logged train loss exceeds ln(vocab) + this many nats "
                             "(worse than guessing uniformly); 0 disables", _non_negative, ">= 0"),
    "max_flops": Key(0.0, "training FLOP budget: fixes the steps before training (flops_per_token x tokens); "
                     "0 = none", _non_negative, ">= 0"),
    "max_tokens": Key(0, "training token budget: fixes the steps before training; 0 = none", _non_negative, ">= 0"),
    "max_time": Key(0.0, "stop after the first step past this many seconds of training; 0 = none",
                    _non_negative, ">= 0"),
    "max_cost": Key(0.0, "stop after the first step past this many dollars of training at cost_per_hour; "
                    "0 = none", _non_negative, ">= 0"),
    "cost_per_hour": Key(1.50, "dollars per hour of training, for max_cost and cost reports", _positive, "> 0"),
    "halt_at_step": Key(0, "train to this step, validate, checkpoint and stop as 'paused' (a sweep continues the "
                        "cell later with a larger value); 0 = off", _non_negative, ">= 0"),
    "oom_retry": Key(False, "after out-of-memory, retry the cell once with half the micro-batch and twice "
                     "grad_accum (same effective batch)"),
}

TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list"}


def type_error(key: str, value: Any, default: Any) -> str | None:
    """Describe why ``value`` has the wrong type for a key whose default is ``default``."""
    if default is None or value is None:
        return None
    expected = type(default)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return None
    if isinstance(value, bool) != (expected is bool) or not isinstance(value, expected):
        return f"{key} must be {TYPE_NAMES.get(expected, expected.__name__)}, got {value!r}"
    return None


def check_trainer_values(config: dict[str, Any], where: str) -> None:
    for name, key in TRAINER_KEYS.items():
        value = config.get(name)
        problem = type_error(name, value, key.default)
        if problem:
            raise ConfigError(f"{where}: {problem}")
        if key.check is not None and value is not None and not key.check(value):
            raise ConfigError(f"{where}: {name} = {value!r} is impossible; it must be {key.requirement}")
    stride, seq_len = config.get("eval_stride") or 0, config.get("seq_len") or 0
    if stride > seq_len:
        raise ConfigError(f"{where}: eval_stride = {stride} is larger than seq_len = {seq_len}; "
                          f"use at most {seq_len} (0 means seq_len)")
    if config.get("oom_retry") and config.get("batch_size", 0) % 2:
        raise ConfigError(f"{where}: oom_retry halves the micro-batch, so batch_size must be even, "
                          f"got {config['batch_size']}; make it even or set oom_retry = false")
