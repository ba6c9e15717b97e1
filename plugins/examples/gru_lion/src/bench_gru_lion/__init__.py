"""A bench plugin: registers the ``gru`` model and the ``example-lion`` optimizer.

bench ships a ``lion`` of its own (from pytorch-optimizer); a plugin registering the same name would
clash with it, so this hand-written one is ``example-lion``.
"""

from __future__ import annotations

from bench import Component, hookimpl
from bench_gru_lion.gru import GRULanguageModel
from bench_gru_lion.lion import Lion, lion

GRU = Component("gru", GRULanguageModel,
                {"n_layer": 1, "n_embd": 256, "n_hidden": 256, "dropout": 0.0},
                "GRU language model: embedding -> n_layer GRU -> dropout -> linear head")
# Declaring lr sets Lion's own default (the matrix's lr still wins): its sign updates move every
# coordinate by lr, so it wants 3-10x less than AdamW's 1e-3.
LION = Component("example-lion", lion, {"lr": 1e-4, "betas": [0.9, 0.99], "weight_decay": 0.0},
                 "Lion (Chen et al. 2023): sign of interpolated momentum, decoupled weight decay")

__all__ = ["GRU", "LION", "GRULanguageModel", "Lion", "bench_models", "bench_optimizers"]


@hookimpl
def bench_models() -> list[Component]:
    return [GRU]


@hookimpl
def bench_optimizers() -> list[Component]:
    return [LION]
