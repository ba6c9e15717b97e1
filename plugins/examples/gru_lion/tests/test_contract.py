"""The bench conformance kit on this package's components, as installed (through the entry point).

Run with ``pytest -p bench.testing`` (the plugin also loads on its own unless
PYTEST_DISABLE_PLUGIN_AUTOLOAD is set).
"""

from __future__ import annotations

import pytest
import torch

from bench.testing import parametrize_with_checks
from bench_gru_lion import GRU, LION, Lion

SMALL = {"n_layer": 2, "n_embd": 16, "n_hidden": 24, "dropout": 0.1}  # dropout on: train-mode causality counts


@parametrize_with_checks(models=[("gru", GRU, SMALL)],
                         optimizers=[LION, ("lion-decay", LION, {"weight_decay": 0.1, "lr": 1e-3})])
def test_bench_contract(check):
    check()


def test_installed_entry_point_registers_both(bench_registry):
    assert bench_registry.get("model", "gru") is GRU
    assert bench_registry.get("optimizer", "example-lion") is LION


def test_lion_step_is_the_papers_update_rule():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
    opt = Lion([p], lr=0.1, betas=(0.9, 0.99), weight_decay=0.5)
    m = torch.tensor([0.0, 0.0, 0.0])
    for g in ([1.0, 1.0, -1.0], [-3.0, 0.5, 2.0]):
        grad = torch.tensor(g)
        expected = p.detach() * (1 - 0.1 * 0.5) - 0.1 * torch.sign(0.9 * m + 0.1 * grad)
        m = 0.99 * m + 0.01 * grad
        p.grad = grad
        opt.step()
        torch.testing.assert_close(p.detach(), expected, rtol=0, atol=0)
        torch.testing.assert_close(opt.state[p]["exp_avg"], m, rtol=0, atol=0)


@pytest.mark.parametrize("kwargs, key", [({"lr": 0.0}, "lr"), ({"betas": [0.9, 1.0]}, "betas"),
                                         ({"weight_decay": -1.0}, "weight_decay")])
def test_lion_rejects_impossible_settings(kwargs, key):
    with pytest.raises(ValueError, match=key):
        LION.factory([torch.nn.Parameter(torch.zeros(2))], device_type="cpu", **{"lr": 1e-4, **kwargs})
