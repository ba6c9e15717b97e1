"""Models built for their shapes only: same parameters as a real build, no initialisers run."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from bench.registry import build_registry, plugin_manager
from bench.shapes import shapes_only

SMALL = {"n_layer": 2, "n_embd": 16, "n_hidden": 16, "n_head": 2, "n_positions": 32}


@pytest.mark.parametrize("name", ["lstm", "gpt1", "gpt2-tiny"])
def test_shapes_match_a_real_build(name):
    component = build_registry(plugin_manager()).get("model", name)
    params = {key: SMALL.get(key, default) for key, default in component.defaults.items()}
    with shapes_only():
        meta = component.factory(64, **params)
    real = component.factory(64, **params)
    assert {n: p.shape for n, p in meta.named_parameters()} == {n: p.shape for n, p in real.named_parameters()}
    assert all(p.is_meta for p in meta.parameters())
    assert meta.parameter_counts() == real.parameter_counts()


def test_only_meta_tensors_skip_initialisation():
    with shapes_only():
        on_meta = torch.empty(3)
        assert torch.nn.init.normal_(on_meta) is on_meta and on_meta.uniform_() is on_meta
        on_cpu = torch.nn.init.constant_(torch.zeros(3, device="cpu"), 2.0)
    assert torch.equal(on_cpu, torch.full((3,), 2.0))  # a real tensor is still initialised
    assert not torch.empty(1).is_meta  # the context is gone


def test_building_shapes_does_not_import_dynamo():
    # Initialising a meta tensor goes through torch._refs, which imports torch._dynamo (~0.9 s);
    # only a fresh interpreter shows whether that happened.
    probe = ("import sys\nfrom bench.registry import build_registry, plugin_manager\n"
             "from bench.shapes import shapes_only\nregistry = build_registry(plugin_manager())\n"
             "for name in ('lstm', 'gpt1', 'gpt2-tiny'):\n"
             "    component = registry.get('model', name)\n"
             "    with shapes_only():\n        component.factory(50257, **component.defaults)\n"
             "print('torch._dynamo' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, check=True)
    assert done.stdout.strip() == "False", done.stderr
