"""The decoder skeleton GPT-1, GPT-2 and Llama share; each model file supplies its block and flags.

    idx -> token (+ learned position, GPT) embeddings -> dropout -> n_layer blocks
        -> final norm (GPT-2: LayerNorm, Llama: RMSNorm) = hidden(idx)  -> head: a linear map to the vocabulary

``hidden`` and ``head`` are the optional split of bench's model contract (see
:class:`bench.lm.LanguageModel`): the harness runs the vocabulary-sized head only at the
positions it scores. ``forward`` is ``head(hidden(idx))``.

Parameter names (``wte``, ``wpe``, ``blocks.N...``, ``ln_f``, ``lm_head``) are the ones
bench's checkpoints have always used.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from bench.lm import LanguageModel

from ._blocks import check_heads, check_hparams, init_gpt_weights, transformer_flops_per_token

# (n_embd, n_head, dropout, bias) -> a block mapping (B, T, C) to (B, T, C).
BlockFactory = Callable[[int, int, float, bool], nn.Module]
# (n_embd, bias) -> the final norm.
NormFactory = Callable[[int, bool], nn.Module]


def layer_norm(n_embd: int, bias: bool) -> nn.Module:
    return nn.LayerNorm(n_embd, bias=bias)


class GPT(LanguageModel):
    """A causal transformer decoder; ``block`` decides where the norms sit and what the sublayers are.

    ``final_norm`` adds ``norm`` (a LayerNorm unless given) before the head (GPT-2, Llama; a post-LN
    block already ends with one). ``scaled_residual_init`` starts the residual projections at
    ``0.02 / sqrt(2 * n_layer)`` (GPT-2), see :func:`._blocks.init_gpt_weights`.
    ``learned_positions=False`` drops the position table: the blocks place tokens themselves (RoPE).
    """

    def __init__(self, vocab_size: int, *, block: BlockFactory, final_norm: bool, scaled_residual_init: bool,
                 n_layer: int, n_embd: int, n_head: int, n_positions: int, dropout: float,
                 tie_weights: bool, bias: bool = True, norm: NormFactory = layer_norm,
                 learned_positions: bool = True):
        super().__init__()
        check_hparams(vocab_size, n_layer=n_layer, dropout=dropout,
                      n_embd=n_embd, n_head=n_head, n_positions=n_positions)
        check_heads(n_embd, n_head)
        self.vocab_size = vocab_size
        self.context_length = n_positions
        self.n_layer, self.n_embd = n_layer, n_embd

        self.wte = nn.Embedding(vocab_size, n_embd)
        self.wpe = nn.Embedding(n_positions, n_embd) if learned_positions else None
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(block(n_embd, n_head, dropout, bias) for _ in range(n_layer))
        # Identity holds no parameters, so GPT-1's state_dict has no ln_f entries.
        self.ln_f = norm(n_embd, bias) if final_norm else nn.Identity()
        # Weights of one layer's matmuls, for the FLOP count (12 d^2 for GPT's blocks).
        self.layer_matmul = sum(p.numel() for p in self.blocks[0].parameters() if p.ndim >= 2)
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        if tie_weights:
            # The input and output embeddings share one matrix (GPT-1 and GPT-2 both do): it
            # saves V*d parameters and ties rare tokens' input and output representations.
            self.lm_head.weight = self.wte.weight
        init_gpt_weights(self, residual_scale_layers=n_layer if scaled_residual_init else None)

    def hidden(self, idx: torch.Tensor) -> torch.Tensor:
        x = self._embed(idx, 0)
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x)

    def hidden_after(self, prefix: torch.Tensor, suffixes: torch.Tensor) -> torch.Tensor:
        """``hidden`` of each row of ``suffixes`` (N, S) read after ``prefix`` (1, P), computing the
        prefix once: each block takes the prefix's input at that layer as extra keys and values."""
        x_p = self._embed(prefix, 0)
        x = self._embed(suffixes, prefix.size(1))
        for block in self.blocks:
            x = block(x, x_p)
            x_p = block(x_p)
        return self.ln_f(x)

    def _embed(self, idx: torch.Tensor, start: int) -> torch.Tensor:
        """Token plus position embeddings of ``idx`` placed at positions ``start, start + 1, ...``
        (token embeddings alone without a position table)."""
        end = start + idx.size(1)
        if end > self.context_length:
            raise ValueError(f"sequence length {end} exceeds n_positions={self.context_length}; "
                             f"use shorter sequences or raise n_positions")
        if self.wpe is None:
            return self.drop(self.wte(idx))
        pos = torch.arange(start, end, device=idx.device)
        return self.drop(self.wte(idx) + self.wpe(pos))

    def head(self, h: torch.Tensor) -> torch.Tensor:
        return self.lm_head(h)

    def flops_per_token(self, seq_len: int) -> int:
        return transformer_flops_per_token(
            n_layer=self.n_layer, n_embd=self.n_embd, vocab_size=self.vocab_size, seq_len=seq_len,
            layer_matmul=self.layer_matmul,
        )
