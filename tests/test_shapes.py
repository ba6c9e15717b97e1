"""Models built for their shapes only: same parameters as a real build, no initialisers run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.registry import build_registry, plugin_manager
from bench.shapes import optimizer_probe, shapes_only

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


def test_probing_optimizers_does_not_import_dynamo_and_leaves_torch_as_it_was():
    # Every registered optimizer is built on a probe parameter inside optimizer_probe, then one
    # outside it: only the second may import torch._dynamo, as torch itself does.
    probe = ("import sys, torch\nfrom bench.param_roles import probe_parameters\n"
             "from bench.registry import build_registry, plugin_manager\nfrom bench.shapes import optimizer_probe\n"
             "registry = build_registry(plugin_manager())\n"
             "with optimizer_probe():\n"
             "    for name in registry.names('optimizer'):\n"
             "        component = registry.get('optimizer', name)\n"
             "        component.build(component.defaults, probe_parameters(), lr=1e-3, device_type='cpu')\n"
             "print('torch._dynamo' in sys.modules)\n"
             "torch.optim.SGD(probe_parameters(), lr=0.1)\nprint('torch._dynamo' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, check=True)
    assert done.stdout.split() == ["False", "True"], done.stderr


def test_optimizer_probe_restores_the_methods_it_touched():
    wrapped = torch.optim.Optimizer.add_param_group.__wrapped__
    before = getattr(wrapped, "__dynamo_disable", None)
    with optimizer_probe():
        torch.optim.AdamW(torch.nn.Linear(2, 2).parameters(), lr=1e-3)
    assert getattr(wrapped, "__dynamo_disable", None) is before


def test_dry_run_does_not_import_dynamo(tmp_path):
    probe = ("import sys\nfrom bench.cli import main\n"
             f"code = main(['run', 'matrices/quickstart.toml', '--dry-run', '--outputs', {str(tmp_path)!r}])\n"
             "print(code, 'torch._dynamo' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, check=True,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.stdout.split()[-2:] == ["0", "False"], done.stderr
