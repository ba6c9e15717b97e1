"""GRU language model: embedding -> n_layer GRU -> dropout -> linear head.

Recurrent, so causal by construction and unbounded in length (``context_length = None``).
Training FLOPs per token: ``6 * (gru_weights + vocab_size * n_hidden)`` where a GRU layer has
``3 * n_hidden * (n_in + n_hidden)`` weights (reset, update and candidate gates; ``n_in`` is
n_embd for the first layer, n_hidden after). Biases and nonlinearities are ignored.
"""

from __future__ import annotations

import torch
from torch import nn

from bench.lm import LanguageModel


class GRULanguageModel(LanguageModel):
    context_length = None

    def __init__(self, vocab_size: int, n_layer: int, n_embd: int, n_hidden: int, dropout: float):
        super().__init__()
        sizes = {"vocab_size": vocab_size, "n_layer": n_layer, "n_embd": n_embd, "n_hidden": n_hidden}
        for key, value in sizes.items():
            if not (isinstance(value, int) and value > 0):
                raise ValueError(f"{key} must be a positive integer, got {value!r}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.vocab_size = vocab_size
        self.embedding = nn.Embedding(vocab_size, n_embd)
        # nn.GRU applies dropout only between layers; self.drop covers the last layer's output.
        self.gru = nn.GRU(n_embd, n_hidden, num_layers=n_layer, batch_first=True,
                          dropout=dropout if n_layer > 1 else 0.0)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(n_hidden, vocab_size)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(self.embedding(idx))  # a zero initial state: every window is independent
        return self.head(self.drop(out))

    def flops_per_token(self, seq_len: int) -> int:
        gru_weights = sum(p.numel() for name, p in self.gru.named_parameters() if name.startswith("weight"))
        return 6 * (gru_weights + self.head.weight.numel())
