"""Held-out loss: the mean negative log-likelihood over every evaluation token exactly once."""

from __future__ import annotations

import math
from contextlib import nullcontext

import torch

from bench.data.samplers import evaluation_batches
from bench.loss import lm_loss


def autocast_context(device: torch.device, dtype: str):
    if dtype == "bfloat16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


@torch.inference_mode()
def evaluate(model: torch.nn.Module, tokens: torch.Tensor, *, seq_len: int, batch_size: int,
             dtype: str = "float32", loss_chunk: int = 0) -> dict[str, float]:
    """Returns ``loss`` (nats/token), ``ppl`` and ``tokens`` (how many targets were scored)."""
    was_training = model.training
    model.eval()
    total_nll = torch.zeros((), dtype=torch.float64, device=tokens.device)
    count = 0
    try:
        for x, y in evaluation_batches(tokens, seq_len, batch_size):
            with autocast_context(tokens.device, dtype):
                # No (B, T, V) logits survive into the next batch: lm_loss drops them (or, with
                # loss_chunk, never builds them whole).
                nll = lm_loss(model, x, y, chunk=loss_chunk, reduction="sum")
            total_nll += nll.double()
            count += y.numel()
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("evaluation split has fewer than 2 tokens")
    loss = total_nll.item() / count
    return {"loss": loss, "ppl": math.exp(min(loss, 700.0)), "tokens": count}
