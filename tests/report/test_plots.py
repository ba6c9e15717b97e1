from __future__ import annotations

import math

from matplotlib.figure import Figure

from bench.report import plots
from bench.store import ResultStore

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _store_with_curves(tmp_path, summaries):
    store = ResultStore(tmp_path / "outputs", "quick")
    for index, summary in enumerate(summaries):
        record = store.cell(summary["id"])
        record.write_config({"id": summary["id"], "name": summary["name"], "config": summary["config"]})
        record.write_summary(summary)
        if summary["status"] != "ok":
            continue  # a failed cell has no metrics.jsonl: it gets no plot
        start = summary["best_val_ppl"] * 4
        rows = [{"kind": "log", "step": 50, "train_loss": math.log(start), "lr": 0.003},
                {"kind": "step", "step": 50, "val_loss": math.log(start * 0.9), "train_time_s": 0.2}]
        for epoch in (1, 2, 3):
            ppl = start / (2 ** epoch)
            rows.append({"kind": "epoch", "epoch": epoch, "step": 100 * epoch, "train_loss": math.log(ppl * 1.05),
                         "val_loss": math.log(ppl), "train_time_s": 0.4 * epoch + index, "eval_time_s": 0.1})
        record.write_metrics(rows)
    return store


def test_write_plots_draws_every_cell_and_the_matrix_overview(tmp_path, summaries):
    store = _store_with_curves(tmp_path, summaries)
    written = plots.write_plots(store, tmp_path / "plots", store.summaries())
    names = sorted(p.name for p in written)
    assert "all_cells_val_ppl.png" in names
    assert len(written) == 6  # five finished cells and the overview; the diverged cell has no curve
    assert "gpt1-L1-sgd.png" not in names
    for path in written:
        assert path.parent == tmp_path / "plots" / "quick"
        assert path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 10_000


def test_validation_points_place_mid_epoch_evaluations_at_fractional_epochs(tmp_path, summaries):
    store = _store_with_curves(tmp_path, summaries[:1])
    curves = plots.CellCurves(store.summaries()[0], store.cell(summaries[0]["id"]).read_metrics())
    epochs = [point[0] for point in curves.val_points()]
    assert epochs == [0.5, 1.0, 2.0, 3.0]
    assert curves.label == "lstm/sgd/L1"


def test_perplexity_axis_turns_logarithmic_only_for_a_wide_spread():
    axis = Figure().subplots()
    plots._maybe_log(axis, [3.0, 4.0, 5.0])
    assert axis.get_yscale() == "linear"
    plots._maybe_log(axis, [3.0, 60.0, float("nan"), None])
    assert axis.get_yscale() == "log"


def test_minor_log_ticks_label_only_2_3_and_5():
    assert [plots._minor_label(v, None) for v in (2.0, 3.0, 4.0, 50.0, 70.0)] == ["2", "3", "", "50", ""]


def test_plot_skips_cells_with_truncated_metrics_and_draws_the_rest(tmp_path, summaries, capsys):
    from bench import cli

    store = _store_with_curves(tmp_path, summaries[:3])
    torn, cut, intact = (store.cell(s["id"]) for s in summaries[:3])
    torn_path, cut_path = torn.path / "metrics.jsonl", cut.path / "metrics.jsonl"
    torn_path.write_bytes(torn_path.read_bytes()[:-20])  # the last line cut mid-way
    # A summary written at the end of training records metrics.jsonl; a cut at a line end is caught too.
    cut.write_summary({k: v for k, v in cut.read_summary().items() if k != "files"})
    cut_path.write_bytes(b"".join(cut_path.read_bytes().splitlines(keepends=True)[:-1]))
    assert cli.main(["plot", "--outputs", str(store.root), "--out", str(tmp_path / "plots")]) == 0
    out, err = capsys.readouterr()
    assert sorted(line.rsplit("/", 1)[1] for line in out.splitlines()) == [
        "all_cells_val_ppl.png", f"{summaries[2]['name']}.png"]
    assert f"warning: {torn_path} line 5 is not valid JSON" in err
    assert f"warning: {cut_path} does not match summary.json (" in err and "Traceback" not in err
