"""`bench fit ... --from FILE` as a user runs it, in process through ``bench.cli.main``."""

from __future__ import annotations

import json

import pytest

from bench.analysis import simulate
from bench.cli import main


@pytest.fixture
def cs336_json(tmp_path):
    """A CS336 assignment-3 style file (72 runs, 9 budgets) generated from Hoffmann et al.'s law."""
    path = tmp_path / "isoflops_curves.json"
    path.write_text(json.dumps(simulate.cs336_records(simulate.isoflop_runs(noise=0.002, seed=5))))
    return path


def test_isoflop_from_cs336_json_shows_both_methods_approach3_and_leave_one_out(cs336_json, tmp_path, capsys):
    code = main(["fit", "isoflop", "--from", str(cs336_json), "--outputs", str(tmp_path / "out"),
                 "--bootstrap", "200", "--budgets", "1e23"])
    out = capsys.readouterr().out
    assert code == 0
    assert "72 runs, 9 budgets" in out
    assert "Method vertex" in out and "Method min" in out and "Difference: the N_opt exponent" in out
    assert "| alpha " in out and "95% CI (bootstrap)" in out
    assert "N_opt (approach 3) [95% CI]" in out and "Loss (approach 3) [95% CI]" in out
    assert "3e+21 (largest)" in out and "Extrapolation, the headline quality figure" in out
    assert (tmp_path / "out" / "plots" / "isoflops_curves" / "isoflop.png").stat().st_size > 10_000


def test_one_method_only(cs336_json, tmp_path, capsys):
    assert main(["fit", "isoflop", "--from", str(cs336_json), "--outputs", str(tmp_path), "--bootstrap", "20",
                 "--method", "min"]) == 0
    out = capsys.readouterr().out
    assert "Method min" in out and "Method vertex" not in out and "N_opt (vertex)" not in out


def test_hparam_from_csv(tmp_path, capsys):
    lines = ["width,lr,loss"] + [f"{w},{0.5 * w ** -0.5 * f},{3 + (f - 1) ** 2}"
                                 for w in (64, 128, 256, 512) for f in (0.5, 1.0, 2.0)]
    (tmp_path / "lr.csv").write_text("\n".join(lines))
    assert main(["fit", "hparam", "--from", str(tmp_path / "lr.csv"), "--x", "width", "--y", "lr",
                 "--outputs", str(tmp_path)]) == 0
    assert "lr = 0.5 x width^-0.500" in capsys.readouterr().out


@pytest.mark.parametrize("args, problem", [
    (["fit", "isoflop"], "either a matrix"),
    (["fit", "isoflop", "m.toml", "--from", "x.json"], "not both"),
    (["fit", "isoflop", "--from", "missing.json"], "no such file"),
    (["fit", "isoflop", "--from", "{file}", "--where", "parameters<0"], "no run passes"),
])
def test_bad_input_is_one_line_and_exit_2(cs336_json, tmp_path, capsys, args, problem):
    args = [a.replace("{file}", str(cs336_json)) for a in args]
    assert main([*args, "--outputs", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert problem in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_matrix_results_still_fit(tmp_path, capsys):
    from bench.store import ResultStore
    store = ResultStore(tmp_path / "out", "grid")
    for i, run in enumerate(simulate.isoflop_runs(noise=0.002, budgets=(1e19, 1e20, 1e21, 1e22)).itertuples()):
        record = store.cell(f"c{i}")
        record.write_config({"id": f"c{i}"})
        record.write_summary({"id": f"c{i}", "status": "ok", "best_val_loss": run.loss, "params_total": run.n,
                              "train_tokens": run.d, "config": {"dataset": "synthetic", "max_flops": run.budget}})
    assert main(["fit", "isoflop", "grid", "--outputs", str(tmp_path / "out"), "--bootstrap", "50"]) == 0
    out = capsys.readouterr().out
    assert "32 finished cells, 4 budgets" in out and "1e+22 (largest)" in out
