"""Speed options: dtype autocast and loss scaling, TF32 flags, torch.compile, evaluation batch."""

from __future__ import annotations

import math
import os
import warnings

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


@pytest.mark.skipif(not hasattr(torch.backends.cuda.matmul, "fp32_precision"), reason="torch before 2.9")
def test_tf32_flags_warn_nothing_and_newer_readers_follow_them():
    # Setting CUDA's flags needs no GPU: this runs the same torch code configure_tf32 runs on one.
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    before = (matmul.allow_tf32, cudnn.allow_tf32)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            for enabled, precision in ((True, "tf32"), (False, "ieee")):
                accel.configure_tf32(torch.device("cuda"), enabled)
                assert matmul.fp32_precision == precision and matmul.allow_tf32 is enabled
                # cuDNN off reads "none" (inherit the global default, which is full fp32).
                assert (cudnn.conv.fp32_precision == "tf32") is enabled and cudnn.allow_tf32 is enabled
    finally:
        matmul.allow_tf32, cudnn.allow_tf32 = before


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


# A short run in bfloat16 (8-bit mantissa) or float16 (10-bit, loss-scaled) stays within this many
# nats of the float32 run's losses: the documented tolerance of reduced-precision training here.
LOW_PRECISION_TOLERANCE = {"bfloat16": 0.01, "float16": 0.002}  # measured: 5e-4 and 9e-5


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_a_short_low_precision_run_stays_close_to_float32(tmp_path, dtype):
    from tests.test_training_sanity import SMALL_MODEL, train

    settings = dict(model="gpt2-tiny", optimizer="adamw", lr=3e-3, dataset="synthetic", vocab_size=64,
                    train_tokens=6000, valid_tokens=1000, test_tokens=1000, seq_len=16, batch_size=8,
                    max_steps=30, steps_per_epoch=15, log_every=5, grad_clip=1.0, **SMALL_MODEL)
    full, full_record = train(tmp_path / "fp32", **settings)
    low, low_record = train(tmp_path / dtype, **settings, dtype=dtype)
    losses = lambda record: [row["train_loss"] for row in record.read_metrics() if row["kind"] == "log"]  # noqa: E731
    assert len(losses(low_record)) == len(losses(full_record)) == 6
    gaps = [abs(a - b) for a, b in zip(losses(low_record), losses(full_record))]
    gaps.append(abs(low["test_loss"] - full["test_loss"]))
    assert max(gaps) < LOW_PRECISION_TOLERANCE[dtype], gaps
    assert low["test_loss"] < full["test_loss"] + 0.5 < math.log(64)  # it learned, like the float32 run


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("BENCH_SLOW"), reason="torch.compile takes minutes on a small CPU; "
                    "set BENCH_SLOW=1 to run")
def test_a_compiled_cell_trains_like_the_eager_one_and_reports_its_compile_time(tmp_path):
    from tests.test_training_sanity import SMALL_MODEL, train

    settings = dict(model="gpt2-tiny", optimizer="adamw", dataset="synthetic", vocab_size=64, train_tokens=4000,
                    valid_tokens=700, test_tokens=700, seq_len=16, batch_size=8, max_steps=12,
                    steps_per_epoch=6, log_every=3, **SMALL_MODEL)
    eager, _ = train(tmp_path / "eager", **settings)
    compiled, _ = train(tmp_path / "compiled", **settings, compile=True)
    assert eager["compile_time_s"] is None and compiled["compile_time_s"] > 0
    assert compiled["test_loss"] == pytest.approx(eager["test_loss"], abs=1e-3)
