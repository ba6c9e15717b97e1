"""Pieces shared by the transformer models: attention, MLP, init, FLOPs and argument checks.

GPT-1, GPT-2 and Llama use the same attention (Llama with rotary positions and, optionally,
fewer key/value heads than query heads); GPT-1 and GPT-2 also share the MLP and differ only in
where the LayerNorms sit. The blocks themselves live in ``gpt1.py``, ``gpt2_tiny.py`` and
``llama.py``, the decoder skeleton around them in ``gpt.py``.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def check_hparams(vocab_size: int, *, n_layer: int, dropout: float, **sizes: int) -> None:
    """Raise ``ValueError`` naming the offending key for hyperparameters no model can use.

    ``sizes`` are widths that must be positive integers (``n_embd``, ``n_positions``, ...).
    """
    if not isinstance(vocab_size, int) or vocab_size < 1:
        raise ValueError(f"vocab_size must be a positive integer, got {vocab_size!r}")
    if not isinstance(n_layer, int) or n_layer < 1:
        raise ValueError(f"n_layer must be an integer >= 1, got {n_layer!r}; set n_layer to 1 or more")
    for key, value in sizes.items():
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be a positive integer, got {value!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}; use 0.0 to disable it")


def check_heads(n_embd: int, n_head: int) -> None:
    """Attention splits the channels evenly across heads."""
    if n_embd % n_head:
        nearest = min((h for h in range(1, n_embd + 1) if n_embd % h == 0), key=lambda h: abs(h - n_head))
        raise ValueError(
            f"n_embd={n_embd} is not divisible by n_head={n_head}: each head gets n_embd // n_head "
            f"channels; pick n_head from the divisors of n_embd (nearest: n_head={nearest})"
        )


def check_kv_heads(n_head: int, n_kv_head: int) -> None:
    """Grouped-query attention shares each key/value head among ``n_head // n_kv_head`` query heads."""
    if not isinstance(n_kv_head, int) or n_kv_head < 1 or n_head % n_kv_head:
        divisors = [h for h in range(1, n_head + 1) if n_head % h == 0]
        raise ValueError(f"n_kv_head={n_kv_head!r} must divide n_head={n_head}: pick one of {divisors} "
                         "(n_head itself is plain multi-head attention)")


def rotate(x: torch.Tensor, start: int, theta: float) -> torch.Tensor:
    """Rotary position embedding (Su et al. 2021) of ``x`` (B, H, T, D) at positions ``start, start + 1, ...``.

    Channel ``i`` of the first half pairs with channel ``i`` of the second half (the layout Hugging
    Face's Llama uses); the pair at position ``m`` turns by ``m * theta ** (-2i / D)``. The angles are
    computed in float32 on every call: a few kFLOPs, and no cached table to size or move between devices.
    """
    T, D = x.size(-2), x.size(-1)
    inv_freq = 1.0 / theta ** (torch.arange(0, D, 2, device=x.device, dtype=torch.float32) / D)
    angles = torch.arange(start, start + T, device=x.device, dtype=torch.float32)[:, None] * inv_freq
    angles = torch.cat([angles, angles], dim=-1)
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x[..., : D // 2], x[..., D // 2:]
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where position ``t`` attends only to positions ``<= t``.

    ``n_kv_head`` (default ``n_head``) below ``n_head`` is grouped-query attention (Ainslie et al.
    2023): keys and values have ``n_kv_head`` heads, each shared by ``n_head // n_kv_head`` query
    heads. ``rope_theta`` (default: none) rotates queries and keys by their position (RoPE) for a
    model without a position table.
    """

    def __init__(self, n_embd: int, n_head: int, dropout: float, bias: bool = True, *, n_kv_head: int | None = None,
                 rope_theta: float | None = None):
        super().__init__()
        self.n_head = n_head
        self.n_kv_head = n_kv_head or n_head
        self.dropout = dropout
        self.rope_theta = rope_theta
        self.kv_width = n_embd // n_head * self.n_kv_head
        # One matmul produces queries, keys and values for all heads at once.
        self.c_attn = nn.Linear(n_embd, n_embd + 2 * self.kv_width, bias=bias)
        # Output projection: writes back into the residual stream (scaled at init in GPT-2).
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, prefix: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` (B, T, C); ``prefix`` (1, P, C), when given, is this layer's input at P earlier
        positions that every row of ``x`` continues: each row attends to all of it and causally
        to itself, as if the prefix were prepended to it (see ``GPT.hidden_after``)."""
        B, T, C = x.shape
        # Sharing key/value heads: the fused kernel repeats them (only asked for when there is sharing).
        gqa = {"enable_gqa": True} if self.n_kv_head != self.n_head else {}
        q, k, v = self._qkv(x, start=0 if prefix is None else prefix.size(1))
        if prefix is None:
            # is_causal=True applies the lower-triangular mask inside the fused kernel
            # (flash / memory-efficient attention on GPU), so no (T, T) mask buffer is stored.
            y = F.scaled_dot_product_attention(
                q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True, **gqa
            )
        else:
            k_p, v_p = (t.expand(B, -1, -1, -1) for t in self._qkv(prefix, start=0)[1:])
            P = prefix.size(1)
            seen = torch.ones(T, P + T, dtype=torch.bool, device=x.device).tril(P)  # row i: prefix + 0..i
            y = F.scaled_dot_product_attention(
                q, torch.cat([k_p, k], 2), torch.cat([v_p, v], 2), attn_mask=seen,
                dropout_p=self.dropout if self.training else 0.0, **gqa
            )
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))

    def _qkv(self, x: torch.Tensor, start: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys and values of ``x`` as (B, heads, T, head_dim), rotated for positions from ``start``."""
        C = x.size(2)
        q, k, v = self.c_attn(x).split([C, self.kv_width, self.kv_width], dim=2)
        q, k, v = self._heads(q, self.n_head), self._heads(k, self.n_kv_head), self._heads(v, self.n_kv_head)
        if self.rope_theta is not None:
            q, k = rotate(q, start, self.rope_theta), rotate(k, start, self.rope_theta)
        return q, k, v

    @staticmethod
    def _heads(t: torch.Tensor, n_head: int) -> torch.Tensor:
        # (B, T, n_head * head_dim) -> (B, n_head, T, head_dim): heads become a batch dimension.
        B, T, C = t.shape
        return t.view(B, T, n_head, C // n_head).transpose(1, 2)


class MLP(nn.Module):
    """Position-wise feed-forward network with a 4x wider GELU hidden layer."""

    def __init__(self, n_embd: int, dropout: float, bias: bool = True):
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd, bias=bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * n_embd, n_embd, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


def init_gpt_weights(model: nn.Module, residual_scale_layers: int | None = None) -> None:
    """N(0, 0.02) for every matmul and embedding, zero biases (GPT-1 and GPT-2 alike).

    With ``residual_scale_layers=n_layer`` the projections that write into the residual
    stream (every ``c_proj``) get std ``0.02 / sqrt(2 * n_layer)``: each block adds two such
    outputs, and scaling keeps the residual stream's variance from growing with depth (GPT-2).
    """
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
    if residual_scale_layers is not None:
        std = 0.02 / math.sqrt(2 * residual_scale_layers)
        for name, param in model.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(param, mean=0.0, std=std)


def transformer_flops_per_token(
    *, n_layer: int, n_embd: int, vocab_size: int, seq_len: int, layer_matmul: int | None = None
) -> int:
    """Training FLOPs per token: ``6 * N_matmul + 6 * n_layer * seq_len * n_embd``.

    * ``N_matmul = n_layer * layer_matmul + vocab_size * n_embd``: the weights of one layer's
      matmuls (GPT's default ``12 * n_embd**2``: qkv 3 d^2, attention output d^2, MLP 8 d^2;
      Llama's are smaller with grouped keys and values and differ with its SwiGLU width), plus the
      output head, which is a matmul even when its weight is tied to the token embedding. Biases,
      norms, rotary positions and the embedding lookups are ignored (O(d) per token, negligible).
    * A weight used once per token costs 2 FLOPs forward (multiply + add) and 4 backward
      (gradient w.r.t. input and w.r.t. weight): hence the factor 6 = 3 x forward.
    * Attention scores ``q @ k^T`` and the weighted sum ``att @ v`` are each ``2 * T * d``
      forward FLOPs per token per layer if every position attended to all T positions;
      with the causal mask a token sees on average T/2, so forward is ``2 * T * d`` per
      layer and training ``6 * T * d`` (PaLM's ``12 * L * T * d``, halved for causality).
    """
    per_layer = 12 * n_embd**2 if layer_matmul is None else layer_matmul
    n_matmul = n_layer * per_layer + vocab_size * n_embd
    return 6 * n_matmul + 6 * n_layer * seq_len * n_embd
