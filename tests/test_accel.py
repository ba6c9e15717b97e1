"""Speed options: dtype autocast and loss scaling, TF32 flags, torch.compile, evaluation batch."""

from __future__ import annotations

import os

import pytest
import torch

from bench import accel
from bench_plugins import models


def small_gpt(vocab: int = 64) -> torch.nn.Module:
    component = {c.name: c for c in models.bench_models()}["gpt2-tiny"]
    torch.manual_seed(0)
    return component.factory(vocab, **{**component.defaults, "n_layer": 1, "n_embd": 32, "n_head": 2,
                                       "n_positions": 16})


@pytest.mark.parametrize("dtype, expected", [("float32", torch.float32), ("bfloat16", torch.bfloat16),
                                             ("float16", torch.float16)])
def test_autocast_runs_matmuls_in_the_cell_dtype(dtype, expected):
    layer = torch.nn.Linear(4, 4)
    with accel.autocast_context(torch.device("cpu"), dtype):
        assert layer(torch.randn(2, 4)).dtype == expected


def test_only_float16_scales_the_loss():
    cpu = torch.device("cpu")
    assert accel.grad_scaler(cpu, "float16").is_enabled()
    assert not accel.grad_scaler(cpu, "bfloat16").is_enabled()
    assert not accel.grad_scaler(cpu, "float32").is_enabled()


def test_tf32_flags_change_only_on_cuda(monkeypatch):
    before = torch.backends.cuda.matmul.allow_tf32
    accel.configure_tf32(torch.device("cpu"), not before)
    assert torch.backends.cuda.matmul.allow_tf32 == before


def test_default_eval_batch_size_per_device():
    assert accel.default_eval_batch_size(torch.device("cpu"), 16) == 16
    assert accel.default_eval_batch_size(torch.device("cuda"), 16) == 32


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("BENCH_SLOW"), reason="torch.compile takes minutes on a small CPU; "
                    "set BENCH_SLOW=1 to run")
def test_compiled_model_matches_eager_and_keeps_its_parameters():
    model = small_gpt()
    idx = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(1))
    eager = model(idx)
    keys = list(model.state_dict())
    compiled = accel.compile_model(model)
    assert compiled is model and list(model.state_dict()) == keys
    torch.testing.assert_close(model(idx), eager, rtol=1e-4, atol=1e-5)
