from __future__ import annotations

import math

import pytest
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
    assert curves.label == "lstm-L1-sgd"  # as the cell is named everywhere else


def test_logged_train_windows_are_plotted_between_evaluations():
    rows = [{"kind": "log", "step": 5, "train_loss": 3.0}, {"kind": "log", "step": 10, "train_loss": 2.5},
            {"kind": "epoch", "epoch": 1, "step": 10, "train_loss": 2.75, "val_loss": 2.6, "train_time_s": 4.0},
            {"kind": "log", "step": 15, "train_loss": 2.2},
            {"kind": "epoch", "epoch": 2, "step": 20, "train_loss": 2.1, "val_loss": 2.2, "train_time_s": 10.0},
            {"kind": "log", "step": 20, "train_loss": 2.0}]
    curves = plots.CellCurves({"config": {"model": "lstm", "optimizer": "sgd"}}, rows)
    # epoch = step / 10; seconds interpolated between (0, 0), (10, 4 s) and (20, 10 s)
    assert curves.log_points() == [(0.5, 2.0, 3.0), (1.0, 4.0, 2.5), (1.5, 7.0, 2.2), (2.0, 10.0, 2.0)]
    fig = plots.cell_figure(curves)
    assert "train (each logged window)" in [t.get_text() for t in fig.axes[0].get_legend().get_texts()]


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


def _seeded_cells(losses_by_seed, lr=0.01):
    """One configuration trained over several seeds: evaluations at steps 10, 20, 30."""
    cells = []
    for seed, losses in enumerate(losses_by_seed):
        summary = {"id": f"s{seed}-{lr}", "name": f"c{seed}", "status": "ok",
                   "config": {"model": "llama", "optimizer": "adamw", "n_layer": 2, "lr": lr, "seed": seed}}
        rows = [{"kind": "step", "step": 10 * (i + 1), "val_loss": v, "train_time_s": float(i + 1)}
                for i, v in enumerate(losses[:-1])]
        rows.append({"kind": "epoch", "epoch": 1, "step": 10 * len(losses), "val_loss": losses[-1],
                     "train_time_s": float(len(losses))})
        cells.append(plots.CellCurves(summary, rows))
    return cells


def test_configuration_bands_are_seed_mean_and_t_interval():
    from scipy import stats as scipy_stats

    cells = _seeded_cells([[3.0, 2.5, 2.0], [3.2, 2.7, 2.1], [3.1, 2.6, 2.3]]) + _seeded_cells([[4.0, 3.0, 2.9]],
                                                                                                   lr=0.1)
    bands = {b.label: b for b in plots.configuration_bands(cells)}
    assert set(bands) == {"llama-L2-adamw lr=0.01", "llama-L2-adamw lr=0.1"}
    band = bands["llama-L2-adamw lr=0.01"]
    assert band.n == 3 and band.mean == pytest.approx([3.1, 2.6, 6.4 / 3])
    assert band.epoch == pytest.approx([1 / 3, 2 / 3, 1.0]) and band.seconds == [1.0, 2.0, 3.0]
    last = [2.0, 2.1, 2.3]
    low, high = scipy_stats.t.interval(0.95, 2, loc=sum(last) / 3, scale=scipy_stats.sem(last))
    assert math.isclose(band.low[-1], low) and math.isclose(band.high[-1], high)
    single = bands["llama-L2-adamw lr=0.1"]
    assert single.n == 1 and math.isnan(single.low[0])


def test_matrix_figure_draws_a_band_and_names_n_in_the_legend():
    cells = _seeded_cells([[3.0, 2.5, 2.0], [3.2, 2.7, 2.1], [3.1, 2.6, 2.3]])
    fig = plots.matrix_figure("m", cells)
    axis = fig.axes[0]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["llama-L2-adamw (n=3)"]
    assert axis.collections  # the fill_between band
    assert "95 % t interval" in fig._suptitle.get_text()


def _trial(cell_id: str, group_lr: float, steps: list[int], floor: float | None = None) -> plots.CellCurves:
    """A sweep trial's cell as the trainer records it: evaluations at ``steps``, no finished epoch
    (pruned) unless the last step ends one."""
    rows = [{"kind": "step", "step": s, "val_loss": 4.0 - 0.01 * s, "train_time_s": 0.01 * s} for s in steps]
    summary = {"id": cell_id, "name": cell_id, "status": "pruned",
               "config": {"model": "gpt1", "optimizer": "adamw", "n_layer": 1, "lr": group_lr}}
    if floor is not None:
        summary["entropy_floor_ppl"] = floor
    return plots.CellCurves(summary, rows)


def test_sweep_overview_draws_trial_curves_with_one_legend_entry_per_group():
    cells = [_trial(f"a{i}", 0.001 * (i + 1), [4, 12, 36][: i % 3 + 1]) for i in range(12)]
    cells += [_trial(f"b{i}", 0.002 * (i + 1), [4, 12][: i % 2 + 1], floor=2.9) for i in range(12)]
    cells += [_trial("f0", 0.001, [4, 12, 36]), _trial("f1", 0.001, [4, 12, 36])]
    sweep = {**{f"a{i}": ("optimizer=adam", False) for i in range(12)},
             **{f"b{i}": ("optimizer=adamw", False) for i in range(12)},
             "f0": ("optimizer=adam", True), "f1": ("optimizer=adam", True)}
    fig = plots.sweep_figure("hb", cells, sweep)
    by_step, by_time = fig.axes
    curves = [line for line in by_step.get_lines() if line.get_label().startswith("_")]
    assert len(curves) == 26  # one line per cell, one-point trials included (drawn as a marker)
    colors = {cell.summary["id"]: line.get_color() for cell, line in zip(cells, curves)}
    assert len({colors[f"a{i}"] for i in range(12)} | {colors["f0"]}) == 1  # a group shares one colour
    assert colors["a0"] != colors["b0"]
    assert [line.get_linestyle() for line in curves[-2:]] == ["--", "--"]  # final reruns dashed
    assert len(by_time.get_lines()) == 27  # and the same against time, with the floor
    (legend,) = fig.legends  # below the panels, not over the data
    labels = [t.get_text() for t in legend.get_texts()]
    assert labels == ["optimizer=adam (12 trials, 2 final)", "optimizer=adamw (12 trials)",
                      "dashed: final-seed rerun of the best trial", "entropy floor 2.90"]
    assert not by_step.get_legend() and not by_time.get_legend()


def test_write_plots_uses_the_sweep_overview_for_a_sweep(tmp_path, summaries):
    store = _store_with_curves(tmp_path, summaries)
    ok = [s for s in store.summaries() if s["status"] == "ok"]
    sweep = {s["id"]: ("all", False) for s in ok}
    written = plots.write_plots(store, tmp_path / "plots", store.summaries(), sweep)
    assert "all_cells_val_ppl.png" in [p.name for p in written]
    overview = plots.sweep_figure("quick", [plots.CellCurves(s, store.cell(s["id"]).read_metrics()) for s in ok],
                                  sweep)
    assert [t.get_text() for t in overview.legends[0].get_texts()][0] == f"all ({len(ok)} trials)"


def test_a_pruned_trial_is_plotted_against_step():
    cell = _trial("p", 0.01, [4, 12])
    cell.rows.insert(0, {"kind": "log", "step": 4, "train_loss": 4.1})
    assert cell.x_unit == "step"
    assert [p[0] for p in cell.val_points()] == [4.0, 12.0]
    fig = plots.cell_figure(cell)
    top = fig.axes[0]
    assert top.get_xlabel() == "step"
    assert [line.get_label() for line in top.get_lines()] == ["train (each logged window)", "validation"]
    assert list(top.get_lines()[1].get_xdata()) == [4.0, 12.0]
