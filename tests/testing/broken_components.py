"""Components that break the contract on purpose, for the kit's own tests (also imported by a
pytest subprocess that runs the kit as a plugin author would)."""

from __future__ import annotations

import torch
from torch import nn

from bench.components import Component
from bench.lm import LanguageModel


class TrainModeLeak(LanguageModel):
    """Causal in eval mode; in train mode position t also sees the mean of the whole sequence
    (the kind of bug a ``self.training`` branch or a train-only augmentation introduces)."""

    def __init__(self, vocab_size: int, n_embd: int = 8):
        super().__init__()
        self.vocab_size, self.emb = vocab_size, nn.Embedding(vocab_size, n_embd)
        self.head = nn.Linear(n_embd, vocab_size)

    def forward(self, idx):
        x = self.emb(idx)
        if self.training:
            x = x + x.mean(dim=1, keepdim=True)
        return self.head(x)

    def flops_per_token(self, seq_len):
        return 6 * self.head.weight.numel()


LEAK = Component("train-leak", TrainModeLeak, {"n_embd": 8})


class _Bigram(LanguageModel):
    """A causal bigram model (logits at t from token t alone) that subclasses add a leak to."""

    def __init__(self, vocab_size: int, n_embd: int = 8, n_positions: int = 64):
        super().__init__()
        self.vocab_size, self.context_length = vocab_size, n_positions
        self.emb, self.head = nn.Embedding(vocab_size, n_embd), nn.Linear(n_embd, vocab_size)

    def forward(self, idx):
        if idx.size(1) > self.context_length:
            raise ValueError(f"input of {idx.size(1)} tokens exceeds the context of {self.context_length}")
        return self.head(self.emb(idx))

    def flops_per_token(self, seq_len):
        return 6 * self.head.weight.numel()

    def next_token_embedding(self, idx):
        """Position t gets the embedding of token t + 1 (zeros at the last position): the leak."""
        ahead = self.emb(idx[:, 1:])
        return torch.cat([ahead, torch.zeros_like(ahead[:, :1])], dim=1)


class ZeroInitPeek(_Bigram):
    """Peeks at the next token through a zero-initialised projection: causal at initialisation
    (the path adds exactly zero), leaky once training has moved the projection."""

    def __init__(self, vocab_size: int, n_embd: int = 8, n_positions: int = 64):
        super().__init__(vocab_size, n_embd, n_positions)
        self.peek = nn.Linear(n_embd, vocab_size, bias=False)
        nn.init.zeros_(self.peek.weight)

    def forward(self, idx):
        return super().forward(idx) + self.peek(self.next_token_embedding(idx))


class LatePeek(_Bigram):
    """Peeks at the next token only at positions >= 8: causal on the kit's old length-8 inputs."""

    def forward(self, idx):
        logits = super().forward(idx)
        late = (torch.arange(idx.size(1), device=idx.device) >= 8)[None, :, None]
        return logits + late * self.head(self.next_token_embedding(idx))


ZERO_INIT_PEEK = Component("zero-init-peek", ZeroInitPeek, {"n_embd": 8, "n_positions": 64})
LATE_PEEK = Component("late-peek", LatePeek, {"n_embd": 8, "n_positions": 64})


class SignMomentum(torch.optim.Optimizer):
    """signSGD with momentum (Signum): sign-based, so a lost momentum buffer changes few signs."""

    def __init__(self, params, lr, beta=0.9, drop_state=False, fixed_lr=False):
        super().__init__(params, {"lr": lr, "beta": beta})
        self.drop_state, self.fixed_lr, self.initial_lr = drop_state, fixed_lr, lr

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            lr = self.initial_lr if self.fixed_lr else group["lr"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                m = self.state[p].setdefault("momentum", torch.zeros_like(p))
                m.mul_(group["beta"]).add_(p.grad, alpha=1 - group["beta"])
                p.add_(m.sign(), alpha=-lr)

    def load_state_dict(self, state_dict):
        if self.drop_state:  # the bug: restores the groups, forgets the momentum buffers
            state_dict = {**state_dict, "state": {}}
        super().load_state_dict(state_dict)


def signum(**flags):
    def factory(params, *, lr, device_type, beta):
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        return SignMomentum(params, lr, beta, **flags)
    return factory

