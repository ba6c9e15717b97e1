"""GPT-1 style decoder (Radford et al., 2018): a post-LayerNorm transformer.

Token and learned position embeddings feed ``n_layer`` blocks that normalise *after* each
residual addition, as in the original transformer::

    x = ln_1(x + attn(x))
    x = ln_2(x + mlp(x))

There is no final LayerNorm (the last block already ends with one). Weights start at
N(0, 0.02) with zero biases, as in the paper.

Training FLOPs per token: ``6 * (12 * n_layer * n_embd**2 + vocab_size * n_embd) +
6 * n_layer * seq_len * n_embd``, derived in ``_blocks.transformer_flops_per_token``.
"""

from __future__ import annotations

import torch
from torch import nn

from ._blocks import MLP, CausalSelfAttention
from .gpt import GPT

DEFAULTS = dict(n_layer=4, n_embd=256, n_head=4, n_positions=512, dropout=0.0, tie_weights=True)


class PostLNBlock(nn.Module):
    """Residual add, then normalise: the stream is re-normalised after every sublayer."""

    def __init__(self, n_embd: int, n_head: int, dropout: float, bias: bool = True):
        super().__init__()
        self.attn = CausalSelfAttention(n_embd, n_head, dropout, bias)
        self.ln_1 = nn.LayerNorm(n_embd, bias=bias)
        self.mlp = MLP(n_embd, dropout, bias)
        self.ln_2 = nn.LayerNorm(n_embd, bias=bias)

    def forward(self, x: torch.Tensor, prefix: torch.Tensor | None = None) -> torch.Tensor:
        # ``prefix``: this block's input at earlier positions all rows continue (GPT.hidden_after).
        x = self.ln_1(x + self.attn(x, prefix))
        return self.ln_2(x + self.mlp(x))


def build(vocab_size: int, **hparams) -> GPT:
    # No final LayerNorm: the last block already ends with one. Plain N(0, 0.02) init.
    return GPT(vocab_size, block=PostLNBlock, final_norm=False, scaled_residual_init=False, **hparams)
