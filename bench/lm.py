"""The interface every model plugin implements."""

from __future__ import annotations

import torch
from torch import nn


class LanguageModel(nn.Module):
    """An autoregressive language model over token ids.

    Subclasses implement ``forward(idx)`` mapping a LongTensor ``(B, T)`` to logits
    ``(B, T, vocab_size)`` where position ``t`` sees only tokens ``<= t``, and
    :meth:`flops_per_token`. They set ``vocab_size`` and ``context_length`` (the longest
    input they accept, ``None`` when unbounded, as for recurrent models).
    """

    vocab_size: int
    context_length: int | None = None

    def embedding_parameters(self) -> list[torch.Tensor]:
        """Parameters that are looked up, not multiplied (token and position tables)."""
        return [m.weight for m in self.modules() if isinstance(m, nn.Embedding)]

    def parameter_counts(self) -> dict[str, int]:
        """Total and non-embedding parameter counts (tied weights counted once)."""
        unique = {id(p): p for p in self.parameters()}
        total = sum(p.numel() for p in unique.values())
        embedding = sum(p.numel() for p in {id(p): p for p in self.embedding_parameters()}.values())
        return {"total": total, "non_embedding": total - embedding}

    def flops_per_token(self, seq_len: int) -> int:
        """Analytic training FLOPs (forward + backward) per token at this sequence length."""
        raise NotImplementedError

    def forward(self, idx: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError
