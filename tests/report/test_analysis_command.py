"""`bench report` seeds/target/profile tables and `bench fit` on real tiny runs, in-process."""

from __future__ import annotations

import json
import math
import textwrap

import pytest
import torch

from bench.cli import main
from bench.errors import BenchError
from bench.registry import build_registry, plugin_manager
from bench.report import fits
from tests.conftest import TINY_DEFAULTS

SEEDS = TINY_DEFAULTS + """
eval_every = 5
lr = 1e-2
target_loss = 2.6
checkpoint = false

[matrix]
model = ["lstm"]
optimizer = ["adam", "sgd"]
"""


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    root = tmp_path_factory.mktemp("analysis-seeds")
    matrix = root / "seeded.toml"
    matrix.write_text(textwrap.dedent('seeds = [0, 1, 2]\n' + SEEDS))
    assert main(["run", str(matrix), "--outputs", str(root / "out")]) == 0
    return root / "out"


def _report(outputs, capsys, *args):
    code = main(["report", "--outputs", str(outputs), *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_seeds_comparison_and_time_to_target_tables(seeded, capsys):
    code, out, _ = _report(seeded, capsys, "--matrix", "seeded", "--format", "json")
    assert code == 0
    tables = json.loads(out)["matrices"]["seeded"]
    seeds = tables["seeds"]["rows"]
    assert [r["Seeds"] for r in seeds] == [3, 3] and all(r["CI low"] <= r["Mean val loss"] <= r["CI high"]
                                                         for r in seeds)
    (pair,) = tables["comparison"]["rows"]
    # Which optimizer is A follows the cells' order in the store (their ids), not the matrix.
    assert (pair["Axis"], {pair["A"], pair["B"]}, pair["Seeds"]) == ("optimizer", {"adam", "sgd"}, 3)
    assert pair["A is"] in ("better", "worse", "not distinguishable at 3 seeds") and 0 <= pair["p"] <= 1
    target = tables["time_to_target"]["rows"]
    assert len(target) == 6 and all(r["Target loss"] == 2.6 for r in target)
    reached = [r for r in target if r["Step"] != "not reached"]
    assert reached and all(r["Step"] % 5 == 0 and r["Tokens"] == r["Step"] * 8 * 16 for r in reached)
    assert "first evaluation with val loss <= target" in tables["time_to_target"]["notes"][0]


def test_one_seed_says_no_claim_is_possible(seeded, capsys):
    code, out, _ = _report(seeded, capsys, "--matrix", "seeded", "--where", "seed=0")
    assert code == 0 and "no claim that one configuration beats another is possible" in out
    code, _, err = _report(seeded, capsys, "--matrix", "seeded", "--where", "seed=0", "--tables", "seeds")
    assert code == 2 and err.strip().splitlines() == [
        "bench: error: a significance table needs at least two seeds per configuration; "
        "add seeds = [0, 1, 2] to the matrix and run it again"]


def test_target_never_reached_is_one_line(seeded, capsys):
    code, _, err = _report(seeded, capsys, "--matrix", "seeded", "--target", "ppl=1.01")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "no cell reached the target" in err


def test_profiles_table_and_png(seeded, capsys, tmp_path):
    code, out, err = _report(seeded, capsys, "--matrix", "seeded", "--profiles", "--measure", "step",
                             "--target", "2.75", "--plots", str(tmp_path), "--tables", "perplexity")
    assert code == 0, err
    assert "performance profile scores (r_max = 4)" in out and "Score" in out
    png = tmp_path / "seeded" / "performance_profile.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, _, err = _report(seeded, capsys, "--matrix", "seeded", "--profiles", "--algorithm", "model")
    assert code == 2 and "does not vary" in err


def _steps_for(budget: float, n_embd: int) -> int:
    """Steps that spend ``budget`` training FLOPs on a TINY_DEFAULTS gpt1 of this width (8 x 16 tokens/step)."""
    component = build_registry(plugin_manager()).get("model", "gpt1")
    with torch.device("meta"):
        model = component.factory(16, n_layer=1, n_embd=n_embd, n_head=2, n_positions=32, dropout=0.0,
                                  tie_weights=True)
    return int(budget // (model.flops_per_token(16) * 128))


def test_tiny_isoflop_run_gives_finite_fits_and_a_png(tmp_path, capsys):
    budgets = (5e7, 1e8, 2e8)
    cells = ",\n".join(f"  {{ n_embd = {width}, max_steps = {_steps_for(c, width)} }}"
                       for c in budgets for width in (8, 16, 32))
    matrix = tmp_path / "iso.toml"
    matrix.write_text(textwrap.dedent(TINY_DEFAULTS) + "model = \"gpt1\"\noptimizer = \"adam\"\nlr = 1e-2\n"
                      "n_layer = 1\ncheckpoint = false\n[matrix]\ninclude = [\n" + cells + "\n]\n")
    outputs = str(tmp_path / "out")
    assert main(["run", str(matrix), "--outputs", outputs]) == 0
    capsys.readouterr()
    assert main(["fit", "isoflop", str(matrix), "--outputs", outputs, "--bootstrap", "50",
                 "--budgets", "1e12,1e15"]) == 0
    out = capsys.readouterr().out
    exponents = [float(line.split("C^")[1].split()[0]) for line in out.splitlines()
                 if line.startswith(("  N_opt =", "  D_opt ="))]
    assert len(exponents) == 4 and all(math.isfinite(b) for b in exponents)  # vertex and min methods
    assert "Parametric (Chinchilla approach 3, variable projection)" in out and "| 1e+15 " in out
    assert (tmp_path / "out" / "plots" / "iso" / "isoflop.png").read_bytes()[:4] == b"\x89PNG"
    # Two sizes per budget are not enough for a parabola: one line, exit 2.
    assert main(["fit", "isoflop", str(matrix), "--outputs", outputs, "--where", "n_embd!=32"]) == 2
    assert capsys.readouterr().err.strip().endswith("model size(s) with finished cells; an IsoFLOP parabola "
                                                    "needs at least three")


def test_fit_bad_input_is_one_line(seeded, capsys):
    code = main(["fit", "hparam", "seeded", "--outputs", str(seeded), "--x", "params", "--y", "lr"])
    err = capsys.readouterr().err
    assert code == 2 and err.strip().splitlines() == [
        "bench: error: fitting lr against params needs finished cells at three or more distinct params values, got 1"]
    code = main(["fit", "isoflop", "seeded", "--outputs", str(seeded)])
    assert code == 2 and "at least three compute budgets" in capsys.readouterr().err
    code = main(["fit", "hparam", "seeded", "--outputs", str(seeded), "--x", "params", "--y", "optimizer"])
    assert code == 2 and "'optimizer' is not a number" in capsys.readouterr().err


def test_mixed_datasets_refused():
    cell = {"status": "ok", "best_val_loss": 2.0, "config": {"dataset": "synthetic"}}
    other = {"status": "ok", "best_val_loss": 2.0, "config": {"dataset": "tinyshakespeare"}, "text_tokenizer": "byte"}
    with pytest.raises(BenchError, match=r"mix datasets \(synthetic, tinyshakespeare \(byte tokens\)\)"):
        fits.finished_cells([cell, other])
