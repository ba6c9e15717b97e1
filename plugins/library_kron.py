"""pytorch-optimizer's Kron (PSGD) with random streams of its own; a module of its own so that
:mod:`bench_plugins.library_optimizers` imports pytorch_optimizer only when a cell builds one."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytorch_optimizer as po
import torch

from bench import rng


class Kron(po.Kron):
    """pytorch-optimizer's Kron (PSGD) drawing from random streams of its own, kept in its state.

    The library draws the preconditioner's probe vectors from torch's global generator and its
    balancing coin from numpy's, so its next step depended on generators its state_dict does not
    hold (resuming was not exact) and it shifted every later draw of the run (dropout, sampling).
    Here each step runs with the optimizer's own generator states, saved in ``param_groups[0]``
    (tensors and numbers, so checkpoints load weights-only), and the global ones are put back.
    The streams start from the seed torch was last seeded with (the cell's seed under bench).
    """

    def __init__(self, params: Any, **hparams: Any):
        super().__init__(params, **hparams)
        outer = rng.capture()
        seed = torch.initial_seed() % 2**32
        torch.manual_seed(seed)
        np.random.seed(seed)
        self.param_groups[0]["bench_rng"] = _rng_state()
        rng.restore(outer)

    def step(self, closure: Any = None) -> Any:
        outer = rng.capture()
        _restore_rng(self.param_groups[0]["bench_rng"])
        try:
            return super().step(closure)
        finally:
            self.param_groups[0]["bench_rng"] = _rng_state()
            rng.restore(outer)


def _rng_state() -> dict[str, Any]:
    """The torch (CPU and initialised CUDA) and numpy generator states, as bench.rng keeps them."""
    state = rng.capture()
    return {"torch": state["torch"], "cuda": state["cuda"], "numpy": state["numpy"]}


def _restore_rng(state: dict[str, Any]) -> None:
    rng.restore({**rng.capture(), **state})
