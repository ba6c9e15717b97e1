"""The optional train/eval switch of an optimizer (see "Optimizer modes" in :mod:`bench.hookspecs`).

Schedule-Free optimizers train at one point of their iterate sequence and evaluate at another (the
average): their parameters hold different values in the two modes. An optimizer that defines both
``train()`` and ``eval()`` declares the switch; bench puts it in train mode before the first step of a
run (and of a resumed run) and wraps every evaluation and checkpoint in :func:`evaluating`.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator


def has_modes(optimizer: Any) -> bool:
    """Whether ``optimizer`` declares the switch: both ``train()`` and ``eval()`` are callable."""
    return callable(getattr(optimizer, "train", None)) and callable(getattr(optimizer, "eval", None))


def training(optimizer: Any) -> None:
    """Put a switching optimizer in train mode (a no-op for any other optimizer)."""
    if has_modes(optimizer):
        optimizer.train()


@contextmanager
def evaluating(optimizer: Any) -> Iterator[None]:
    """Evaluation mode for the block, train mode after it, also when the block raises."""
    if not has_modes(optimizer):
        yield
        return
    optimizer.eval()
    try:
        yield
    finally:
        optimizer.train()
