"""Build a model for its shapes only: on the meta device, with its initialisers skipped.

Resolving a matrix and ``--dry-run`` build every cell's model to check its hyperparameters and
count its parameters. On the meta device that takes no memory, but the random initialisers still
run there, and the first one (``Tensor.normal_`` on a meta tensor goes through ``torch._refs``,
which imports ``torch._dynamo``) costs ~0.9 s. Meta tensors hold no values, so initialising them
is pure waste: under :func:`shapes_only` every ``torch.nn.init`` function and every in-place random
fill of a meta tensor returns the tensor untouched.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
from torch.overrides import TorchFunctionMode

_RANDOM_FILLS = ("normal_", "uniform_", "random_", "bernoulli_", "exponential_", "geometric_", "cauchy_",
                 "log_normal_")
# Public in-place initialisers of torch.nn.init (uniform_, kaiming_normal_, orthogonal_, ...).
_INITIALISERS = frozenset(
    [getattr(torch.nn.init, name) for name in dir(torch.nn.init) if name.endswith("_") and not name.startswith("_")]
    + [getattr(torch.Tensor, name) for name in _RANDOM_FILLS]
)


class _SkipInitOnMeta(TorchFunctionMode):
    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func in _INITIALISERS:
            tensor = args[0] if args else kwargs.get("tensor")
            if isinstance(tensor, torch.Tensor) and tensor.is_meta:
                return tensor
        return func(*args, **kwargs)


@contextlib.contextmanager
def shapes_only() -> Iterator[None]:
    """Create tensors on the meta device and skip their initialisation: shapes, no values."""
    with torch.device("meta"), _SkipInitOnMeta():
        yield
