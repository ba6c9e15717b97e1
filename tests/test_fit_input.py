"""Reading other people's tables of runs for `bench fit --from`."""

from __future__ import annotations

import json

import pytest

from bench import fit_input
from bench.analysis import simulate
from bench.errors import BenchError


def test_cs336_json_layout_needs_no_options(tmp_path):
    runs = simulate.isoflop_runs(noise=0.0)
    path = tmp_path / "isoflops_curves.json"
    path.write_text(json.dumps(simulate.cs336_records(runs)))
    frame, how = fit_input.isoflop_frame(fit_input.read_records(path), str(path), {})
    assert len(frame) == 72 and frame["budget"].nunique() == 9
    assert frame["d"].to_numpy() == pytest.approx((runs["budget"] / (6 * runs["n"].round())).to_numpy())
    assert "D = C / (6 N)" in how and "column parameters" in how


def test_open_athena_csv_layout_and_experiment_selection(tmp_path):
    runs = simulate.isoflop_runs(noise=0.0, budgets=(1e19, 1e20, 1e21))
    lines = ["source,experiment,tokens,params,loss"]
    for name in ("a", "b"):
        lines += [f"x,{name},{r.d},{r.n},{r.loss}" for r in runs.itertuples()]
    path = tmp_path / "isoflops.csv"
    path.write_text("\n".join(lines) + "\n")
    rows = fit_input.read_records(path)
    with pytest.raises(BenchError, match="2 experiments .*--where experiment=a"):
        fit_input.isoflop_frame(rows, str(path), {})
    frame, how = fit_input.isoflop_frame([r for r in rows if r["experiment"] == "a"], str(path), {})
    assert "C = 6 N D" in how
    assert sorted(frame["budget"].unique()) == pytest.approx([1e19, 1e20, 1e21])


def test_columns_named_by_options(tmp_path):
    path = tmp_path / "runs.json"
    path.write_text(json.dumps([{"N": 1e6 * k, "C": 1e15, "val": 3.0 + k} for k in range(1, 4)]))
    frame, _ = fit_input.isoflop_frame(fit_input.read_records(path), "runs.json",
                                       {"params": "N", "budget": "C", "loss": "val"})
    assert frame["loss"].tolist() == [4.0, 5.0, 6.0]
    with pytest.raises(BenchError, match="no column 'nope'; the file has C, N, val"):
        fit_input.isoflop_frame(fit_input.read_records(path), "runs.json", {"params": "nope"})
    with pytest.raises(BenchError, match="no loss column .*--loss-column"):
        fit_input.isoflop_frame(fit_input.read_records(path), "runs.json", {"params": "N", "budget": "C"})


@pytest.mark.parametrize("name, text, problem", [
    ("runs.json", "{not json", "not readable as JSON"),
    ("runs.json", '{"runs": []}', "expected a JSON list of objects"),
    ("runs.json", "[]", "holds no runs"),
    ("runs.txt", "x", "unknown file type .txt"),
    ("runs.json", '[{"parameters": "big", "compute_budget": 1e18, "final_loss": 3}]',
     "row 1 has parameters = 'big'"),
    ("runs.json", '[{"parameters": 1e6, "compute_budget": 1e18, "final_loss": -3}]', "row 1 has final_loss = -3"),
])
def test_bad_files_are_one_line(tmp_path, name, text, problem):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(BenchError, match=problem):
        fit_input.isoflop_frame(fit_input.read_records(path), str(path), {})
    with pytest.raises(BenchError, match="no such file"):
        fit_input.read_records(tmp_path / "missing.json")
