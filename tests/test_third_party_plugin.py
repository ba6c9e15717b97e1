"""A plugin distribution built here, found through a real importlib.metadata entry point,
adds a model and an optimizer that then train in a matrix next to the built-ins."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import make_distribution

PLUGIN_SOURCE = '''
import torch
from torch import nn

from bench import Component, hookimpl
from bench.lm import LanguageModel


class TokenwiseMLP(LanguageModel):
    """Each position's logits from its own token through n_layer residual MLPs; no mixing over time."""

    def __init__(self, vocab_size, n_layer, n_embd):
        super().__init__()
        self.vocab_size = vocab_size
        self.embed = nn.Embedding(vocab_size, n_embd)
        self.layers = nn.ModuleList(nn.Linear(n_embd, n_embd) for _ in range(n_layer))
        self.head = nn.Linear(n_embd, vocab_size)
        self.shape = (n_layer, n_embd)

    def forward(self, idx):
        x = self.embed(idx)
        for layer in self.layers:
            x = x + torch.relu(layer(x))
        return self.head(x)

    def flops_per_token(self, seq_len):
        n_layer, n_embd = self.shape
        return 6 * (n_layer * n_embd * n_embd + n_embd * self.vocab_size)


class SignSGD(torch.optim.Optimizer):
    def __init__(self, params, lr):
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad.sign(), alpha=-group["lr"])


def sign_sgd(params, *, lr, device_type):
    if lr <= 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    return SignSGD(params, lr)


@hookimpl
def bench_models():
    return [Component("tokenwise-mlp", TokenwiseMLP, {"n_layer": 1, "n_embd": 16},
                      "per-token residual MLP (a bigram model with depth)")]


@hookimpl
def bench_optimizers():
    return [Component("signsgd", sign_sgd, {}, "sign of the gradient times lr")]
'''


@pytest.fixture
def demo_site(plugin_site):
    make_distribution(plugin_site, "bench-demo-plugin", "bench_demo_plugin", PLUGIN_SOURCE)
    return plugin_site


def test_third_party_model_and_optimizer_train_in_a_matrix(demo_site, bench_cli, write_matrix):
    from tests.conftest import TINY_DEFAULTS
    env = {"PYTHONPATH": str(demo_site)}
    listing = bench_cli("list", env=env)
    assert listing.returncode == 0, listing.stderr
    assert "tokenwise-mlp" in listing.stdout and "signsgd" in listing.stdout
    assert "bench-demo-plugin 0.1" in listing.stdout

    matrix = write_matrix(TINY_DEFAULTS + """
    [matrix]
    model = ["tokenwise-mlp", "lstm"]
    lr = [1e-2]
    optimizer = ["signsgd", "adam"]
    """, name="thirdparty")
    run = bench_cli("run", str(matrix), env=env)
    assert run.returncode == 0, run.stderr
    outputs = Path(matrix).parent / "outputs" / "thirdparty"
    summaries = [json.loads(p.read_text()) for p in outputs.glob("*/summary.json")]
    assert sorted((s["config"]["model"], s["config"]["optimizer"]) for s in summaries) == [
        ("lstm", "adam"), ("lstm", "signsgd"), ("tokenwise-mlp", "adam"), ("tokenwise-mlp", "signsgd")]
    # Every cell trained and beat the uniform guess over the 16-token vocabulary.
    assert all(s["status"] == "ok" and s["best_val_ppl"] < 16 for s in summaries), summaries
    # Each summary says which distribution and version provided each component.
    for summary in summaries:
        components = summary["provenance"]["components"]
        expected = "bench-demo-plugin" if summary["config"]["model"] == "tokenwise-mlp" else "bench-lm"
        assert (components["model"]["distribution"], components["dataset"]["distribution"]) == (expected, "bench-lm")
        assert summary["provenance"]["torch"] and summary["provenance"]["bench"]
    assert {s["provenance"]["components"]["optimizer"]["version"] for s in summaries
            if s["config"]["optimizer"] == "signsgd"} == {"0.1"}


def test_third_party_model_passes_the_contract_checks(demo_site):
    import bench_demo_plugin

    from bench.testing import check_model, check_optimizer

    check_model(bench_demo_plugin.bench_models()[0])
    check_optimizer(bench_demo_plugin.bench_optimizers()[0])


