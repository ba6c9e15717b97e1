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

from bench.lm import LanguageModel

from ._blocks import MLP, CausalSelfAttention, check_heads, check_hparams, init_gpt_weights, transformer_flops_per_token

DEFAULTS = dict(n_layer=6, n_embd=384, n_head=6, n_positions=1024, dropout=0.0, tie_weights=True, bias=True)


class PreLNBlock(nn.Module):
    """Normalise, then add: each sublayer sees a normalised input, the stream stays raw."""

    def __init__(self, n_embd: int, n_head: int, dropout: float, bias: bool):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd, bias=bias)
        self.attn = CausalSelfAttention(n_embd, n_head, dropout, bias)
        self.ln_2 = nn.LayerNorm(n_embd, bias=bias)
        self.mlp = MLP(n_embd, dropout, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT2(LanguageModel):
    def __init__(self, vocab_size: int, *, n_layer: int, n_embd: int, n_head: int,
                 n_positions: int, dropout: float, tie_weights: bool, bias: bool):
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
        self.blocks = nn.ModuleList(PreLNBlock(n_embd, n_head, dropout, bias) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd, bias=bias)
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        if tie_weights:
            # Sharing the token table with the head saves V*d parameters (19M of the 30M
            # at GPT-2's vocabulary) and ties rare tokens' input and output representations.
            self.lm_head.weight = self.wte.weight
        init_gpt_weights(self, residual_scale_layers=n_layer)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        T = idx.size(1)
        if T > self.context_length:
            raise ValueError(f"sequence length {T} exceeds n_positions={self.context_length}; "
                             f"use shorter sequences or raise n_positions")
        pos = torch.arange(T, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))

    def flops_per_token(self, seq_len: int) -> int:
        return transformer_flops_per_token(
            n_layer=self.n_layer, n_embd=self.n_embd, vocab_size=self.vocab_size, seq_len=seq_len
        )


def build(vocab_size: int, **hparams) -> GPT2:
    return GPT2(vocab_size, **hparams)
