"""Llama-style decoder (Touvron et al. 2023): the baseline of today's optimizer studies.

Against GPT-2's pre-LayerNorm block it changes, as Llama does:

* RMSNorm (Zhang & Sennrich 2019) in place of LayerNorm, before each sublayer and the head;
* rotary position embeddings (RoPE, Su et al. 2021) on queries and keys, no position table;
* a SwiGLU MLP (Shazeer 2020), ``down(silu(gate(x)) * up(x))``, ``n_ffn`` wide;
* no biases anywhere;
* optionally grouped-query attention (``n_kv_head`` < ``n_head``) and a head tied to the token table.

It is the GPT decoder skeleton (``gpt.py``) with a Llama block; the attention is the shared one
(``_blocks.py``) with RoPE and grouped keys/values switched on. Weights start at N(0, 0.02), norms at 1,
as Hugging Face's ``LlamaForCausalLM`` initialises them. The SwiGLU gate and up projections are one
fused matrix ``mlp.c_fc`` (gate rows first), the attention's q, k and v one ``attn.c_attn``.

With ``n_ffn = 0`` the MLP is ``8/3 * n_embd`` wide rounded up to a multiple of 32 (Llama keeps
the parameter count of a 4x GELU MLP, with three matrices instead of two). Parameters::

    V*d (+ V*d untied head) + n_layer * (2*d**2 + 2*d*d_kv + 3*d*n_ffn + 2*d) + d

with ``d_kv = d / n_head * n_kv_head``. Training FLOPs per token are counted from the matmul weights
as for GPT (``_blocks.transformer_flops_per_token``).
"""

from __future__ import annotations

import math
from functools import partial

import torch
from torch import nn
from torch.nn import functional as F

from ._blocks import CausalSelfAttention, check_heads, check_hparams, check_kv_heads
from .gpt import GPT

DEFAULTS = dict(n_layer=6, n_embd=384, n_head=6, n_kv_head=0, n_ffn=0, n_positions=1024, rope_theta=10000.0,
                dropout=0.0, tie_weights=False)
NORM_EPS = 1e-5  # Llama 2's RMSNorm epsilon


def rms_norm(n_embd: int, bias: bool) -> nn.Module:
    return nn.RMSNorm(n_embd, eps=NORM_EPS)  # a scale only: RMSNorm has no bias


def ffn_width(n_embd: int, n_ffn: int) -> int:
    return n_ffn or 32 * math.ceil(8 * n_embd / 3 / 32)


class SwiGLU(nn.Module):
    """``c_proj(silu(gate) * up)`` with ``[gate, up] = c_fc(x)``: a gated MLP without biases."""

    def __init__(self, n_embd: int, n_ffn: int, dropout: float):
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 2 * n_ffn, bias=False)
        self.c_proj = nn.Linear(n_ffn, n_embd, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.c_fc(x).chunk(2, dim=-1)
        return self.dropout(self.c_proj(F.silu(gate) * up))


class LlamaBlock(nn.Module):
    """Pre-norm like GPT-2: ``x + attn(norm(x))``, then ``x + mlp(norm(x))``, with Llama's parts."""

    def __init__(self, n_embd: int, n_head: int, dropout: float, bias: bool, *, n_kv_head: int, n_ffn: int,
                 rope_theta: float):
        super().__init__()
        self.ln_1 = rms_norm(n_embd, bias)
        self.attn = CausalSelfAttention(n_embd, n_head, dropout, bias=False, n_kv_head=n_kv_head,
                                        rope_theta=rope_theta)
        self.ln_2 = rms_norm(n_embd, bias)
        self.mlp = SwiGLU(n_embd, n_ffn, dropout)

    def forward(self, x: torch.Tensor, prefix: torch.Tensor | None = None) -> torch.Tensor:
        # ``prefix``: this block's input at earlier positions all rows continue (GPT.hidden_after).
        x = x + self.attn(self.ln_1(x), None if prefix is None else self.ln_1(prefix))
        return x + self.mlp(self.ln_2(x))


def build(vocab_size: int, *, n_layer: int, n_embd: int, n_head: int, n_kv_head: int, n_ffn: int, n_positions: int,
          rope_theta: float, dropout: float, tie_weights: bool) -> GPT:
    check_hparams(vocab_size, n_layer=n_layer, dropout=dropout, n_embd=n_embd, n_head=n_head, n_positions=n_positions)
    check_heads(n_embd, n_head)
    n_kv_head = n_kv_head or n_head  # 0: as many key/value heads as query heads
    check_kv_heads(n_head, n_kv_head)
    if not isinstance(n_ffn, int) or n_ffn < 0:
        raise ValueError(f"n_ffn must be an integer >= 0 (0: 8/3 * n_embd rounded up to 32), got {n_ffn!r}")
    if not rope_theta > 0:
        raise ValueError(f"rope_theta must be > 0, got {rope_theta!r}; Llama 2 uses 10000, Llama 3 500000")
    if (n_embd // n_head) % 2:
        raise ValueError(f"n_embd // n_head = {n_embd // n_head} must be even: RoPE turns channels in pairs")
    block = partial(LlamaBlock, n_kv_head=n_kv_head, n_ffn=ffn_width(n_embd, n_ffn), rope_theta=float(rope_theta))
    return GPT(vocab_size, block=block, final_norm=True, scaled_residual_init=False, norm=rms_norm,
               learned_positions=False, bias=False, n_layer=n_layer, n_embd=n_embd, n_head=n_head,
               n_positions=n_positions, dropout=dropout, tie_weights=tie_weights)
