"""LSTM language model: embedding -> n_layer LSTM -> dropout (= ``hidden``) -> linear ``head``.

A recurrent model is causal by construction (the state at step t is a function of tokens
<= t) and has no maximum length, so ``context_length`` is ``None``.

Training FLOPs per token, independent of sequence length::

    6 * (lstm_weights + vocab_size * n_hidden)

where ``lstm_weights = sum over layers of 4*n_hidden*(n_in + n_hidden)`` (input-to-hidden
and hidden-to-hidden matrices of the four gates; ``n_in`` is n_embd for the first layer and
n_hidden after). Each weight is used once per token: 2 FLOPs forward, 4 backward. Biases,
gate nonlinearities and the embedding lookup are ignored.
"""

from __future__ import annotations

import torch
from torch import nn

from bench.lm import LanguageModel

from ._blocks import check_hparams

DEFAULTS = dict(n_layer=1, n_embd=256, n_hidden=256, dropout=0.0, tie_weights=False)


class LSTMLanguageModel(LanguageModel):
    context_length = None

    def __init__(self, vocab_size: int, *, n_layer: int, n_embd: int, n_hidden: int,
                 dropout: float, tie_weights: bool):
        super().__init__()
        check_hparams(vocab_size, n_layer=n_layer, dropout=dropout, n_embd=n_embd, n_hidden=n_hidden)
        if tie_weights and n_embd != n_hidden:
            raise ValueError(f"tie_weights=True needs n_embd == n_hidden (the head reuses the "
                             f"embedding matrix), got n_embd={n_embd}, n_hidden={n_hidden}; "
                             f"set them equal or tie_weights=False")
        self.vocab_size = vocab_size
        self.embedding = nn.Embedding(vocab_size, n_embd)
        # nn.LSTM applies its own dropout only *between* layers (and warns if n_layer == 1).
        self.lstm = nn.LSTM(n_embd, n_hidden, num_layers=n_layer, batch_first=True,
                            dropout=dropout if n_layer > 1 else 0.0)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(n_hidden, vocab_size)
        if tie_weights:
            self.head.weight = self.embedding.weight

    def hidden(self, idx: torch.Tensor) -> torch.Tensor:
        # Each batch starts from a zero state: sequences are independent windows.
        out, _ = self.lstm(self.embedding(idx))
        return self.drop(out)

    def hidden_after(self, prefix: torch.Tensor, suffixes: torch.Tensor) -> torch.Tensor:
        """``hidden`` of each row of ``suffixes`` (N, S) read after ``prefix`` (1, P): the prefix is
        scanned once and every row starts from its final state."""
        _, (h, c) = self.lstm(self.embedding(prefix))
        n = suffixes.size(0)
        state = (h.expand(-1, n, -1).contiguous(), c.expand(-1, n, -1).contiguous())
        out, _ = self.lstm(self.embedding(suffixes), state)
        return self.drop(out)

    # ``head`` (the nn.Linear above) maps hidden states to logits; with ``hidden`` it is the
    # optional split of bench's model contract, and LanguageModel.forward is head(hidden(idx)).

    def flops_per_token(self, seq_len: int) -> int:
        lstm_weights = sum(p.numel() for name, p in self.lstm.named_parameters() if name.startswith("weight"))
        return 6 * (lstm_weights + self.head.weight.numel())


def build(vocab_size: int, **hparams) -> LSTMLanguageModel:
    return LSTMLanguageModel(vocab_size, **hparams)
