"""The language-model loss, optionally in chunks of positions so full logits never exist at once.

With the GPT-2 vocabulary the logits are the largest tensor of a training step: (16, 128, 50257)
float32 is 394 MiB, and cross-entropy keeps a second tensor of that size (its log-softmax) for
the backward pass and makes a third there. :func:`lm_loss` with ``chunk > 0`` runs the model's
trunk once (``hidden``, see :class:`bench.lm.LanguageModel`) and the vocabulary head over
``chunk`` positions at a time, so only ``chunk x vocab`` logits are alive at any moment.

Training uses :class:`ChunkedHeadLoss`, an autograd function that computes each chunk's
gradient (with respect to the hidden states and the head's parameters) as soon as the chunk's
loss is known, while its logits are still at hand, and frees them. The backward pass then only
scales the stored gradients: nothing is recomputed, so a step costs the same FLOPs as with full
logits (recomputing each chunk's head in the backward pass, as activation checkpointing would,
costs a third more of the head's FLOPs: ~30 % of a step when the head dominates). The price is
memory for one copy of the head's parameter gradients (the size of the head) and of the
hidden-state gradients (B x T x C), both far smaller than the logits.

The loss and gradients equal the full computation up to float rounding (sums over chunks are
added in a different order): tests hold them to 1e-6 in float32.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from bench.lm import Head, split

IGNORE_INDEX = -100  # torch's default: targets with this id are not scored


def lm_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, chunk: int = 0,
            reduction: str = "mean", ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Cross-entropy of ``model``'s next-token predictions for inputs ``x`` and targets ``y`` (B, T).

    ``reduction`` is ``"mean"`` (nats per scored token) or ``"sum"``; targets equal to
    ``ignore_index`` are not scored. ``chunk`` is the number of positions whose logits exist at
    once; 0 (or a model without ``hidden``/``head``) computes the full (B, T, V) logits, and frees
    them before returning. Log-softmax is float32 either way.
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    parts = split(model) if chunk > 0 else None
    targets = y.reshape(-1)
    if parts is None:
        logits = model(x)
        return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets, reduction=reduction,
                               ignore_index=ignore_index)
    hidden, head = parts
    h = hidden(x)
    h = h.reshape(-1, h.size(-1))
    params = [p for p in model.parameters() if p.requires_grad]
    if torch.is_grad_enabled() and (h.requires_grad or params):
        total = ChunkedHeadLoss.apply(h, targets, chunk, head, ignore_index, *params)
    else:
        total = chunked_nll(h, targets, head, chunk, ignore_index)
    return total / (targets != ignore_index).sum() if reduction == "mean" else total


def chunked_nll(h: torch.Tensor, targets: torch.Tensor, head: Head, chunk: int,
                ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Summed cross-entropy of ``head(h)`` against ``targets``, ``chunk`` rows at a time (no gradient)."""
    total = torch.zeros((), dtype=torch.float32, device=h.device)
    with torch.no_grad():
        for start in range(0, h.size(0), chunk):
            logits = head(h[start:start + chunk]).float()
            total += F.cross_entropy(logits, targets[start:start + chunk], reduction="sum",
                                     ignore_index=ignore_index)
    return total


class ChunkedHeadLoss(torch.autograd.Function):
    """Summed cross-entropy of ``head(h)``, its gradients taken chunk by chunk in the forward pass.

    Inputs: ``h`` (N, C), ``targets`` (N,), ``chunk``, ``head``, ``ignore_index`` and the parameters that may
    receive a gradient through ``head`` (passing the model's trainable parameters is enough:
    those the head does not use get none).
    """

    @staticmethod
    def forward(ctx: Any, h: torch.Tensor, targets: torch.Tensor, chunk: int, head: Head, ignore_index: int,
                *params: torch.Tensor) -> torch.Tensor:
        grad_h = torch.empty_like(h) if h.requires_grad else None
        grad_params: list[torch.Tensor | None] = [None] * len(params)
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        for start in range(0, h.size(0), chunk):
            piece = h[start:start + chunk].detach().requires_grad_(h.requires_grad)
            with torch.enable_grad():
                logits = head(piece).float()
                loss = F.cross_entropy(logits, targets[start:start + chunk], reduction="sum",
                                       ignore_index=ignore_index)
                del logits  # the graph keeps what backward needs (the log-softmax), nothing more
                wanted = ([piece] if h.requires_grad else []) + list(params)
                grads = torch.autograd.grad(loss, wanted, allow_unused=True)
            if grad_h is not None:
                grad_h[start:start + chunk] = grads[0]
                grads = grads[1:]
            for i, grad in enumerate(grads):
                previous = grad_params[i]
                if grad is not None:
                    grad_params[i] = grad if previous is None else previous.add_(grad)
            total += loss.detach()
        ctx.save_for_backward(*(g if g is not None else torch.empty(0) for g in [grad_h, *grad_params]))
        ctx.present = [g is not None for g in [grad_h, *grad_params]]
        return total

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        saved = [g * grad_output if present else None for g, present in zip(ctx.saved_tensors, ctx.present)]
        return (saved[0], None, None, None, None, *saved[1:])
