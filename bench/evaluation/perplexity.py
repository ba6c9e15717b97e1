"""Held-out loss: the mean negative log-likelihood over every evaluation token exactly once.

Which windows: by default (``eval_stride`` = ``seq_len``) the split is cut into consecutive,
non-overlapping windows of ``seq_len`` tokens, each starting without context, so early tokens of
each window are predicted from little context. A smaller ``eval_stride`` slides the window and
scores each token once with at least ``seq_len - eval_stride`` tokens of context, which gives a
lower (better) perplexity for the same model; see :func:`bench.data.samplers.sequential_windows`.
A split of several shards is windowed shard by shard (no window crosses a seam; each shard's first
token is not scored).

How many windows: ``limit`` (from the ``val_windows``/``test_windows`` keys, see
:func:`bench.data.samplers.window_limit`) scores a fixed, evenly spaced subset of them, the same
windows on every pass; ``0`` scores them all.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from bench.accel import autocast_context
from bench.data.samplers import IGNORE, evaluation_batches
from bench.data.shards import split_tokens
from bench.loss import lm_loss

PPL_DISPLAY_LIMIT = 1e6  # above this a perplexity says only that the model predicts nothing


def perplexity(loss: float) -> float:
    """``exp(loss)``, infinite where it overflows (a diverged model) rather than a 300-digit number."""
    return math.exp(loss) if loss < 700.0 else math.inf


def format_ppl(ppl: float | None, digits: int = 2) -> str:
    """A perplexity for people: ``inf`` when non-finite, ``>1e6`` when absurd, else fixed digits."""
    if ppl is None:
        return "-"
    if not math.isfinite(ppl):
        return "inf"
    if ppl > PPL_DISPLAY_LIMIT:
        return f">{PPL_DISPLAY_LIMIT:.0e}".replace("e+0", "e")
    return f"{ppl:.{digits}f}"


@torch.inference_mode()
def evaluate(model: torch.nn.Module, tokens: Any, *, seq_len: int, batch_size: int,
             dtype: str = "float32", stride: int | None = None, words: int | None = None,
             loss_chunk: int = 0, limit: int = 0, device: torch.device | None = None) -> dict[str, float]:
    """Returns ``loss`` (nats/token), ``ppl``, ``tokens`` (how many targets were scored) and, when
    ``words`` (the split's word count) is given, ``word_ppl``: exp(total NLL / words).

    Runs under ``torch.inference_mode`` (no autograd bookkeeping at all; measured 1.7-3 % faster
    than ``no_grad``). No (B, T, V) logits survive into the next batch: :func:`bench.loss.lm_loss`
    drops them, or with ``loss_chunk`` never builds them whole. ``tokens`` is a tensor, an array or a
    split of shards (:mod:`bench.data.shards`); batches of a split kept on the host are copied to
    ``device`` (default: where the tokens are)."""
    split = split_tokens(tokens)
    device = device or split.device
    was_training = model.training
    model.eval()
    total_nll = torch.zeros((), dtype=torch.float64, device=device)
    scored = torch.zeros((), dtype=torch.int64, device=device)  # summed on the device: no sync per batch
    try:
        for x, y in evaluation_batches(split, seq_len, batch_size, stride, limit):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with autocast_context(device, dtype):
                nll = lm_loss(model, x, y, chunk=loss_chunk, reduction="sum", ignore_index=IGNORE)
            total_nll += nll.double()
            scored += (y != IGNORE).sum()
    finally:
        model.train(was_training)
    count = int(scored.item())
    if count == 0:
        raise ValueError("evaluation split has fewer than 2 tokens")
    loss = total_nll.item() / count
    result: dict[str, float] = {"loss": loss, "ppl": perplexity(loss), "tokens": count}
    if words:
        result["word_ppl"] = perplexity(total_nll.item() / words)
    return result
