"""Build models and optimizers for resolve-time checks only, without paying for values or torch._dynamo.

Models: on the meta device, with their initialisers skipped.

Resolving a matrix and ``--dry-run`` build every cell's model to check its hyperparameters and
count its parameters. On the meta device that takes no memory, but the random initialisers still
run there, and the first one (``Tensor.normal_`` on a meta tensor goes through ``torch._refs``,
which imports ``torch._dynamo``) costs ~0.9 s. Meta tensors hold no values, so initialising them
is pure waste: under :func:`shapes_only` every ``torch.nn.init`` function and every in-place random
fill of a meta tensor returns the tensor untouched.

Optimizers: resolving builds each cell's optimizer on a probe parameter so impossible
hyperparameters fail early. In torch 2.13 ``Optimizer.add_param_group`` (and ``zero_grad``,
``state_dict``, ``load_state_dict``) are wrapped by ``torch._compile._disable_dynamo``, whose first
call imports ``torch._dynamo`` (~0.9 s, as much as importing torch itself) only to mark the method
as not traceable. A probe is never traced, so :func:`optimizer_probe` pre-fills the cache that
wrapper looks up (the ``__dynamo_disable`` attribute of the wrapped function) with the plain
function for the duration of the probe, and removes it afterwards, so training later gets torch's
own behaviour. A torch that renames that attribute just imports dynamo as before: slower, not wrong.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
from torch._compile import _disable_dynamo
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


_DYNAMO_CACHE = "__dynamo_disable"  # where torch._compile._disable_dynamo caches its wrapped function
_DISABLE_WRAPPER = _disable_dynamo(lambda: None).__code__  # the code object every such wrapper shares


def _dynamo_wrapped(cls: type) -> list[Any]:
    """The plain functions behind ``cls``'s methods that ``_disable_dynamo`` wraps and has not yet cached."""
    found = []
    for attr in vars(cls).values():
        inner = getattr(attr, "__wrapped__", None)
        if getattr(attr, "__code__", None) is _DISABLE_WRAPPER and inner is not None \
                and not hasattr(inner, _DYNAMO_CACHE):
            found.append(inner)
    return found


@contextlib.contextmanager
def optimizer_probe() -> Iterator[None]:
    """Build optimizers without importing ``torch._dynamo``; only for objects that are never trained."""
    seeded = _dynamo_wrapped(torch.optim.Optimizer)
    for function in seeded:
        setattr(function, _DYNAMO_CACHE, function)
    try:
        yield
    finally:
        for function in seeded:
            if getattr(function, _DYNAMO_CACHE, None) is function:
                delattr(function, _DYNAMO_CACHE)
