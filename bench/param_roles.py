"""The job each parameter of a model does: ``embedding``, ``head``, ``norm``, ``bias``, ``matrix`` or ``vector``.

Some optimizers treat parameters differently: Muon is meant for the hidden weight matrices only,
and most LLM recipes leave biases, norms and embeddings out of weight decay. An optimizer factory
receives only ``model.parameters()``, so the trainer tags every parameter once, right after
building the model, with its role in the attribute ``bench_role``; factories read it back with
:func:`role_of`. Untagged parameters (an optimizer built outside bench) have no role.

Roles, first match wins:

* ``embedding``: weights of ``nn.Embedding`` modules and whatever ``model.embedding_parameters()``
  returns (a tied output head is the token table, so it is an embedding);
* ``norm``: parameters of normalisation layers (LayerNorm, RMSNorm, GroupNorm, BatchNorm, or any
  module whose class name ends in ``Norm``);
* ``bias``: parameters whose name contains ``bias`` (``bias``, LSTM/GRU ``bias_ih_l0``, ...);
* ``head``: the weight of an ``nn.Linear`` with ``out_features == model.vocab_size``;
* ``matrix``: every other parameter with two or more dimensions (the hidden weight matrices);
* ``vector``: everything else (scalar gates, 1-D scales outside norm layers).
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

ROLES = ("embedding", "head", "norm", "bias", "matrix", "vector")
ROLE_ATTR = "bench_role"

_NORM_TYPES: tuple[type[nn.Module], ...] = (nn.LayerNorm, nn.RMSNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase)


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, _NORM_TYPES) or type(module).__name__.endswith("Norm")


def _role(module: nn.Module, name: str, param: torch.Tensor, embeddings: set[int], vocab: int | None) -> str:
    if id(param) in embeddings or isinstance(module, nn.Embedding):
        return "embedding"
    if _is_norm(module):
        return "norm"
    if "bias" in name:
        return "bias"
    if isinstance(module, nn.Linear) and vocab is not None and module.out_features == vocab:
        return "head"
    return "matrix" if param.ndim >= 2 else "vector"


def parameter_roles(model: nn.Module) -> dict[str, str]:
    """``{parameter name: role}`` in ``model.named_parameters()`` order (tied weights once)."""
    embedding_parameters = getattr(model, "embedding_parameters", None)
    embeddings = {id(p) for p in embedding_parameters()} if callable(embedding_parameters) else set()
    vocab = getattr(model, "vocab_size", None)
    roles: dict[str, str] = {}
    seen: set[int] = set()
    for prefix, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            if id(param) not in seen:
                seen.add(id(param))
                roles[f"{prefix}.{name}" if prefix else name] = _role(module, name, param, embeddings, vocab)
    return roles


def tag_parameter_roles(model: nn.Module) -> dict[str, str]:
    """Set ``param.bench_role`` on every parameter of ``model``; returns the roles by name."""
    roles = parameter_roles(model)
    for name, param in model.named_parameters():
        setattr(param, ROLE_ATTR, roles[name])
    return roles


def role_of(param: torch.Tensor) -> str | None:
    return getattr(param, ROLE_ATTR, None)


def split_by_role(params: Iterable[torch.Tensor], roles: Iterable[str],
                  needed_by: str) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """``(params whose role is in roles, the rest)``; every parameter must be tagged.

    ``needed_by`` names the option that asked (for the error message).
    """
    wanted = set(roles)
    chosen: list[torch.Tensor] = []
    rest: list[torch.Tensor] = []
    for param in params:
        role = role_of(param)
        if role is None:
            raise ValueError(f"{needed_by} needs to know which parameters are embeddings, norms, biases, ...; "
                             "call bench.param_roles.tag_parameter_roles(model) before building the optimizer "
                             "(bench's trainer does)")
        (chosen if role in wanted else rest).append(param)
    return chosen, rest


def probe_parameters() -> list[torch.Tensor]:
    """A tagged weight matrix and bias: what resolve time builds an optimizer on to check its
    hyperparameters (an optimizer that splits by role needs roles, and Muon a 2-D matrix)."""
    weight, bias = nn.Parameter(torch.zeros(2, 2)), nn.Parameter(torch.zeros(2))
    setattr(weight, ROLE_ATTR, "matrix")
    setattr(bias, ROLE_ATTR, "bias")
    return [weight, bias]
