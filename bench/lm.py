"""The interface every model plugin implements."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

Head = Callable[[torch.Tensor], torch.Tensor]
HiddenAfter = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class LanguageModel(nn.Module):
    """An autoregressive language model over token ids.

    Subclasses implement ``forward(idx)`` mapping a LongTensor ``(B, T)`` to logits
    ``(B, T, vocab_size)`` where position ``t`` sees only tokens ``<= t``, and
    :meth:`flops_per_token`. They set ``vocab_size`` and ``context_length`` (the longest
    input they accept, ``None`` when unbounded, as for recurrent models).

    Optional, and worth it for a large vocabulary: ``hidden(idx) -> (B, T, C)``, the features
    the output layer reads, and ``head(h) -> (..., vocab_size)``, the output layer itself (a
    method or a submodule), applied position by position, so that
    ``head(hidden(idx)) == forward(idx)``. With both present (see :func:`split`) the harness
    runs the head only where it needs logits: the training and evaluation loss in chunks of
    positions (``loss_chunk``) and HellaSwag at continuation positions only. Without them it
    uses ``forward``. A model that has both may leave ``forward`` to this class.

    Optional on top of the split: ``hidden_after(prefix, suffixes) -> (N, S, C)``, the hidden
    states of each row of ``suffixes`` (N, S) read after the one ``prefix`` (1, P), equal (to
    float rounding) to ``hidden(cat([prefix.expand(N, -1), suffixes], 1))[:, P:]`` but reading the
    prefix once. HellaSwag scores an item's four endings after one shared context this way (see
    :func:`prefix_reader`); the GPT models pass the prefix's keys and values to every ending, the
    LSTM starts every ending from the prefix's final state.
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

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        parts = split(self)
        if parts is None:  # pragma: no cover - a subclass without hidden/head must override forward
            raise NotImplementedError(f"{type(self).__name__} implements neither forward nor hidden + head")
        hidden, head = parts
        return head(hidden(idx))


def split(model: nn.Module) -> tuple[Callable[[torch.Tensor], torch.Tensor], Head] | None:
    """``(hidden, head)`` when ``model`` exposes both callables, else ``None`` (use ``forward``).

    ``head`` is looked up on the instance, so it may be a method or a submodule named ``head``.
    """
    hidden, head = getattr(model, "hidden", None), getattr(model, "head", None)
    if callable(hidden) and callable(head):
        return hidden, head
    return None


def prefix_reader(model: nn.Module) -> tuple[HiddenAfter, Head] | None:
    """``(hidden_after, head)`` when ``model`` has the split and ``hidden_after``, else ``None``."""
    parts, hidden_after = split(model), getattr(model, "hidden_after", None)
    if parts is not None and callable(hidden_after):
        return hidden_after, parts[1]
    return None
