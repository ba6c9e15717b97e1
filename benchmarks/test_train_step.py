"""Forward + backward + optimizer step time of every registered model x optimizer at a small shape.

Runs under pytest-benchmark (`tox -e benchmarks`), never in the test suite. Every registered
component is included, plugins too, so a new optimizer or model shows up here by installing it.
The shape is small on purpose (CPU, 2 cores): vocabulary 64, batch 4 x 32 tokens, one or two
layers of width 32. It compares components at one fixed size; it is no forecast of large-model time.
"""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from bench.param_roles import tag_parameter_roles
from bench.registry import build_registry, plugin_manager

VOCAB, BATCH, SEQ = 64, 4, 32
# Applied to whichever of these keys a model declares; other keys keep their defaults.
SMALL = {"n_layer": 2, "n_embd": 32, "n_hidden": 32, "n_head": 2, "n_positions": SEQ, "dropout": 0.0}

REGISTRY = build_registry(plugin_manager())
# One thread: at these sizes threading buys little, and a shared machine's other load then
# disturbs one core's worth of timing instead of both.
torch.set_num_threads(1)
PAIRS = [(m, o) for m in REGISTRY.names("model") for o in REGISTRY.names("optimizer")]


@pytest.mark.parametrize("model_name, optimizer_name", PAIRS, ids=[f"{m}-{o}" for m, o in PAIRS])
def test_train_step(benchmark, model_name, optimizer_name):
    torch.manual_seed(0)
    model_component = REGISTRY.get("model", model_name)
    hparams = {**model_component.defaults, **{k: v for k, v in SMALL.items() if k in model_component.defaults}}
    model = model_component.factory(VOCAB, **hparams)
    tag_parameter_roles(model)
    optimizer_component = REGISTRY.get("optimizer", optimizer_name)
    optimizer = optimizer_component.factory(model.parameters(), lr=1e-3, device_type="cpu",
                                            **optimizer_component.defaults)
    idx = torch.randint(0, VOCAB, (BATCH, SEQ + 1), generator=torch.Generator().manual_seed(0))
    x, y = idx[:, :-1], idx[:, 1:]

    def step() -> None:
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    benchmark.extra_info.update(shape=f"vocab {VOCAB}, batch {BATCH}x{SEQ}", threads=torch.get_num_threads(),
                                params=sum(p.numel() for p in model.parameters()))
    benchmark.pedantic(step, warmup_rounds=2, rounds=20, iterations=1)
