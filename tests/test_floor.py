"""Results below the data's entropy floor are impossible: flagged everywhere, never the best."""

from __future__ import annotations

import json
import math

import pytest

from bench import cli, commands, floor
from bench.components import Component
from bench.hookspecs import hookimpl
from bench.registry import load_plugins
from tests.conftest import TINY_DEFAULTS
from tests.testing.broken_components import ZeroInitPeek


def _summary(loss: float, n: int = 10_000, floor_ppl: float = math.e) -> dict:
    return {"status": "ok", "entropy_floor_ppl": floor_ppl, "vocab_size": 64, "best_val_loss": loss,
            "test_loss": loss, "eval_tokens": {"valid": n, "test": n}}


def test_the_tolerance_is_float_noise_plus_three_standard_errors():
    assert floor.margin(10_000, 64) == pytest.approx(1e-3 + 3 * math.log(64) / 100)
    assert floor.verdict(_summary(1.0)) is None  # at the floor
    assert floor.verdict(_summary(1.0 - 0.9 * floor.margin(10_000, 64))) is None  # within the sampling noise
    assert floor.verdict({"best_val_loss": 0.1}) is None  # no floor known
    message = floor.verdict(_summary(0.207))
    assert message == (
        "impossible: best val loss 0.207 is 0.793 nats below the entropy floor 1.000 (tolerance 0.126 over 10000 "
        "tokens); test loss 0.207 is 0.793 nats below the entropy floor 1.000 (tolerance 0.126 over 10000 tokens); "
        "no model can beat the floor; likely cause: the model sees future tokens (a leak); run bench.testing's "
        "causality checks on it (check_causality_eval, check_causality_train, check_causality_after_training)")


class PeekPlugin:
    @hookimpl
    def bench_models(self):
        return [Component("peek", ZeroInitPeek, {"n_embd": 16, "n_positions": 32})]


def test_a_leaky_model_below_the_floor_is_flagged_and_never_bold(write_matrix, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(commands, "load_plugins", lambda selection=None: load_plugins(selection, [PeekPlugin()]))
    path = write_matrix("name = 'leak'\n" + TINY_DEFAULTS + """
optimizer = "adamw"
lr = 0.03
[matrix]
model = ["peek", "lstm"]
""")
    outputs = tmp_path / "out"
    assert cli.main(["run", str(path), "--outputs", str(outputs)]) == 0
    err = capsys.readouterr().err
    assert "peek-adamw: WARNING: impossible: best val loss " in err
    found = (json.loads(p.read_text()) for p in outputs.glob("leak/*/summary.json"))
    summaries = {s["config"]["model"]: s for s in found}
    assert summaries["peek"]["status"] == "ok" and summaries["peek"]["impossible"].startswith("impossible: ")
    assert summaries["lstm"]["impossible"] is None

    assert cli.main(["report", "--outputs", str(outputs), "--format", "markdown"]) == 0
    report = capsys.readouterr().out
    peek_rows = [line for line in report.splitlines() if line.startswith("| peek")]
    assert peek_rows and all("**" not in line for line in peek_rows)  # never bold
    assert "impossible (leak?)" in peek_rows[0]
    assert any(line.startswith("| **lstm") for line in report.splitlines())  # the real result stays best
    # Every table carries the warning, naming the cell and the likely cause.
    sections = report.count("\n## ")
    assert report.count("_IMPOSSIBLE RESULTS, not comparable and never marked best (1 cell(s)") == sections + 1
    assert "peek-adamw: impossible: best val loss" in report and "(a leak)" in report
