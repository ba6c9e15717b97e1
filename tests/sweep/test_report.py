"""The sweep report's plot inputs: which group each cell belongs to, and legends out of the data."""

from __future__ import annotations

from bench.sweep.report import GroupView, TrialRow, best_so_far_figure, cell_groups


def _group(label: str, cells: list[str], finals: list[str], warm: str | None = None) -> GroupView:
    trials = [TrialRow(label, n, {"lr": 0.001 * (n + 1)}, "ok", {"best_val_loss": 3.7 - 0.01 * n},
                       {"cell_id": cell}) for n, cell in enumerate(cells)]
    if warm:
        trials.append(TrialRow(label, len(cells), {"lr": 0.1}, "warm start", {"best_val_loss": 3.5},
                               {"cell_id": warm, "warm_start": True}))
    return GroupView(label, {"metric": "best_val_loss"}, trials, finals, group=label)


def test_cell_groups_maps_trials_and_final_reruns_to_their_group():
    # a warm-start trial is another matrix's cell: not drawn as this sweep's
    groups = [_group("optimizer=adam", ["a0", "a1"], ["fa1", "fa2"], warm="w0"), _group("optimizer=adamw", ["b0"], [])]
    assert cell_groups(groups) == {"a0": ("optimizer=adam", False), "a1": ("optimizer=adam", False),
                                   "fa1": ("optimizer=adam", True), "fa2": ("optimizer=adam", True),
                                   "b0": ("optimizer=adamw", False)}


def test_best_so_far_has_one_legend_entry_per_group_below_the_axes():
    groups = [_group("optimizer=adam", ["a0", "a1", "a2"], []), _group("optimizer=adamw", ["b0", "b1"], [])]
    fig = best_so_far_figure("tiny", groups)
    (axis,) = fig.axes
    assert axis.get_legend() is None
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["optimizer=adam", "optimizer=adamw"]
    assert [len(line.get_xdata()) for line in axis.get_lines()] == [3, 2]
