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

from bench.lm import LanguageModel

from ._blocks import MLP, CausalSelfAttention, check_heads, check_hparams, init_gpt_weights, transformer_flops_per_token

DEFAULTS = dict(n_layer=4, n_embd=256, n_head=4, n_positions=512, dropout=0.0, tie_weights=True)


class PostLNBlock(nn.Module):
    """Residual add, then normalise: the stream is re-normalised after every sublayer."""

    def __init__(self, n_embd: int, n_head: int, dropout: float):
        super().__init__()
        self.attn = CausalSelfAttention(n_embd, n_head, dropout)
        self.ln_1 = nn.LayerNorm(n_embd)
        self.mlp = MLP(n_embd, dropout)
        self.ln_2 = nn.LayerNorm(n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.ln_1(x + self.attn(x))
        return self.ln_2(x + self.mlp(x))


class GPT1(LanguageModel):
    def __init__(self, vocab_size: int, *, n_layer: int, n_embd: int, n_head: int,
                 n_positions: int, dropout: float, tie_weights: bool):
        super().__init__()
        check_hparams(vocab_size, n_layer=n_layer, dropout=dropout,
                      n_embd=n_embd, n_head=n_head, n_positions=n_positions)
        check_heads(n_embd, n_head)
        self.vocab_size = vocab_size
        self.context_length = n_positions
        self.n_layer, self.n_embd = n_layer, n_embd

        self.wte = nn.Embedding(vocab_size, n_embd)
        self.wpe = nn.Embedding(n_positions, n_embd)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(PostLNBlock(n_embd, n_head, dropout) for _ in range(n_layer))
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        if tie_weights:
            # The input and output embeddings share one matrix (as GPT-1 did).
            self.lm_head.weight = self.wte.weight
        init_gpt_weights(self)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        T = idx.size(1)
        if T > self.context_length:
            raise ValueError(f"sequence length {T} exceeds n_positions={self.context_length}; "
                             f"use shorter sequences or raise n_positions")
        pos = torch.arange(T, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        for block in self.blocks:
            x = block(x)
        return self.lm_head(x)

    def flops_per_token(self, seq_len: int) -> int:
        return transformer_flops_per_token(
            n_layer=self.n_layer, n_embd=self.n_embd, vocab_size=self.vocab_size, seq_len=seq_len
        )


def build(vocab_size: int, **hparams) -> GPT1:
    return GPT1(vocab_size, **hparams)
