"""GPT-2 style decoder (Radford et al., 2019), small by default: 6 layers x 384 channels.

Differences from GPT-1 that matter for training stability:

* pre-LayerNorm blocks, ``x = x + attn(ln_1(x)); x = x + mlp(ln_2(x))``, so the residual
  stream is an unnormalised sum and gradients reach early layers through the identity path;
* a final LayerNorm before the output head (the stream itself is never normalised);
* projections writing into the residual stream start at std ``0.02 / sqrt(2 * n_layer)``.

With the defaults and ``bias=True, tie_weights=True`` the parameter count is::

    V*d + P*d + n_layer * (12*d**2 + 13*d) + 2*d

(token table, position table, per block: 12 d^2 matmul weights, 9 d biases, 4 d LayerNorm;
final LayerNorm), e.g. 30,339,456 for V=50257, P=1024, d=384, n_layer=6.

Training FLOPs per token: ``6 * (12 * n_layer * n_embd**2 + vocab_size * n_embd) +
6 * n_layer * seq_len * n_embd``, derived in ``_blocks.transformer_flops_per_token``.
"""

from __future__ import annotations

import torch
from torch import nn

from ._blocks import MLP, CausalSelfAttention
from .gpt import GPT

DEFAULTS = dict(n_layer=6, n_embd=384, n_head=6, n_positions=1024, dropout=0.0, tie_weights=True, bias=True)


class PreLNBlock(nn.Module):
    """Normalise, then add: each sublayer sees a normalised input, the stream stays raw."""

    def __init__(self, n_embd: int, n_head: int, dropout: float, bias: bool):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd, bias=bias)
        self.attn = CausalSelfAttention(n_embd, n_head, dropout, bias)
        self.ln_2 = nn.LayerNorm(n_embd, bias=bias)
        self.mlp = MLP(n_embd, dropout, bias)

    def forward(self, x: torch.Tensor, prefix: torch.Tensor | None = None) -> torch.Tensor:
        # ``prefix``: this block's input at earlier positions all rows continue (GPT.hidden_after).
        x = x + self.attn(self.ln_1(x), None if prefix is None else self.ln_1(prefix))
        return x + self.mlp(self.ln_2(x))


def build(vocab_size: int, **hparams) -> GPT:
    # A final LayerNorm before the head (the stream itself is never normalised) and
    # residual projections scaled by 1/sqrt(2 * n_layer) at init.
    return GPT(vocab_size, block=PreLNBlock, final_norm=True, scaled_residual_init=True, **hparams)
