"""The speed options of a cell: compute dtype, TF32, torch.compile and the evaluation batch.

* ``dtype``: ``"float32"``; ``"bfloat16"`` (autocast: matmuls in bf16, weights, optimizer and
  reductions such as log-softmax in fp32; same exponent range as fp32, so no loss scaling);
  ``"float16"`` (autocast in fp16 with a :class:`torch.amp.GradScaler`: fp16's 5-bit exponent
  flushes small gradients to zero, so the loss is scaled up before backward and the gradients
  unscaled before clipping and the optimizer step; a step whose gradients overflowed is skipped
  and the scale lowered).
* ``tf32`` (CUDA only; default true): fp32 matmuls and convolutions on tensor cores with a 10-bit
  mantissa (torch's ``allow_tf32``), ~8x the fp32 rate on Ampere and later. No effect on CPU or
  when ``dtype`` already autocasts.
* ``compile``: :func:`torch.compile` on the model's trunk (``hidden``; the whole ``forward`` of
  a model without the split). Compiling happens on the first call; the trainer runs one warm-up
  forward and backward before its clock starts and reports that time as ``compile_time_s``.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

from bench.lm import split

DTYPES = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


def autocast_context(device: torch.device, dtype: str) -> AbstractContextManager:
    """Autocast to ``dtype`` on ``device`` (nothing for float32)."""
    target = DTYPES[dtype]
    return nullcontext() if target is None else torch.autocast(device_type=device.type, dtype=target)


def grad_scaler(device: torch.device, dtype: str) -> torch.amp.GradScaler:
    """A loss scaler that is active only for float16 (a disabled one passes everything through)."""
    return torch.amp.GradScaler(device.type, enabled=dtype == "float16")


def configure_tf32(device: torch.device, enabled: bool) -> None:
    """Let fp32 matmuls and convolutions use TF32 tensor cores on CUDA (process-wide torch flags)."""
    # The legacy setters on purpose: torch (2.9+) keeps its newer ``fp32_precision`` readers in step
    # with them and warns about neither, while setting ``fp32_precision`` makes later legacy reads
    # (``allow_tf32``, as inductor's conv template does) raise "mix of the legacy and new APIs".
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = enabled
        torch.backends.cudnn.allow_tf32 = enabled


def compile_model(model: torch.nn.Module) -> torch.nn.Module:
    """Compile ``model`` in place and return it (same object, same parameters and state_dict).

    With ``hidden``/``head`` the trunk is compiled (``forward`` and the chunked loss both go
    through it; the head is one matmul that compiling does not speed up); otherwise ``forward``.
    """
    if split(model) is not None:
        # An instance attribute shadows the method; mypy cannot see that the attribute holds a callable.
        model.hidden = torch.compile(model.hidden)  # type: ignore[assignment,arg-type]
    else:
        model.compile()
    return model


def default_eval_batch_size(device: torch.device, micro_batch: int) -> int:
    """The evaluation batch when ``eval_batch_size = 0``.

    CPU: the training micro-batch. Measured (``benchmarks/results/lm_adapter_batching.md``,
    one thread): once a batch holds a few thousand positions larger batches are no faster and
    lose to cache misses on the logits. CUDA: twice the micro-batch; evaluation keeps no
    activations for a backward pass, so twice the training batch fits where training fitted, and
    larger batches keep the GPU busier (not measured here: this machine has no GPU).
    """
    return 2 * micro_batch if device.type == "cuda" else micro_batch
