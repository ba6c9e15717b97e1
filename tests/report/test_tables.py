from __future__ import annotations

import json

import pytest

from bench.errors import BenchError
from bench.report import tables
from bench.report.frame import sort_frame, summaries_frame
from bench.report.render import FORMATS, render_document


@pytest.fixture
def frame(summaries):
    return sort_frame(summaries_frame(summaries), "ppl")


def by_name(table, frame):
    return table.set_axis(list(frame["name"]), axis=0)


def test_perplexity_table_marks_best_per_architecture_and_shows_the_floor(frame):
    table = by_name(tables.perplexity_table(frame), frame)
    assert table[tables.BEST][table[tables.BEST]].index.tolist() == ["lstm-L1-adamw", "gpt1-L2-adamw"]
    assert table.loc["lstm-L1-adamw", "Train PPL [epoch]"] == "3.20 [3]"
    assert table.loc["lstm-L1-sgd", "Val / floor"] == pytest.approx(60.0 / 2.9)
    assert table.loc["gpt1-L1-sgd", "Status"] == "diverged"


def test_floor_columns_only_when_some_dataset_has_a_floor(summaries):
    for s in summaries:
        s.pop("entropy_floor_ppl", None)
    assert "Floor PPL" not in tables.perplexity_table(summaries_frame(summaries))


def test_time_table_units(frame):
    table = by_name(tables.time_table(frame), frame)
    row = table.loc["lstm-L1-sgd"]
    assert row["Train time (s)"] == 1.0 and row["Time/step (ms)"] == pytest.approx(1000 / 300)
    assert row["Worst step 10-19 (ms)"] == pytest.approx(1000 / 150)
    assert table["Worst step 10-19 (ms)"].isna().sum() == 2  # the old-format and the failed cell


def test_memory_table_keeps_gpu_columns_only_when_a_gpu_cell_exists(summaries):
    mixed = tables.memory_table(summaries_frame(summaries))
    assert "Allocator peak (MiB)" in mixed and mixed["GPU util mean (%)"].max() == 87.0
    cpu_only = tables.memory_table(summaries_frame(summaries[:3]))
    assert "Allocator peak (MiB)" not in cpu_only and "Process peak (MiB)" in cpu_only
    notes = " ".join(tables.memory_notes(summaries_frame(summaries)))
    assert "NVML" in notes and "resident set" in notes and "older bench" in notes


def test_aggregates_average_finished_cells_only(frame):
    by_optimizer = tables.aggregate_table(frame, "optimizer", "ppl").set_index("Optimizer")
    assert by_optimizer.loc["adamw", "Cells"] == 4
    assert by_optimizer.loc["adamw", "Mean val PPL"] == pytest.approx((3.1 + 3.2 + 3.5 + 3.1) / 4)
    assert by_optimizer.loc["sgd", "Cells"] == 2 and by_optimizer.loc["sgd", "Finished"] == 1
    assert by_optimizer.loc["sgd", "Mean val PPL"] == pytest.approx(60.0)  # the diverged cell is not averaged
    by_time = tables.aggregate_table(frame, "model", "time")
    assert list(by_time["Architecture"]) == ["lstm", "gpt1"]  # lstm's mean time (1.13 s) < gpt1's (1.75 s)


def test_params_table_mfu_from_cells_or_from_a_given_peak(frame):
    stored = by_name(tables.params_table(frame), frame)
    assert stored.loc["gpt1-L4-adamw", "MFU (%)"] > 0
    assert stored["MFU (%)"].notna().sum() == 1  # CPU cells have no peak
    given = by_name(tables.params_table(frame, peak_tflops=2.0), frame)
    expected = given.loc["lstm-L1-sgd", "Achieved FLOP/s"] / 2e12 * 100
    assert given.loc["lstm-L1-sgd", "MFU (%)"] == pytest.approx(expected)
    assert "2 TFLOP/s" in " ".join(tables.params_notes(frame, 2.0))


def test_every_section_has_rows_and_renders_in_every_format(frame):
    sections = tables.build_sections(frame, sort="time")
    assert [s.key for s in sections] == ["perplexity", "time", "memory", "by_optimizer", "by_architecture",
                                         "params", "versions"]
    assert all(len(s.table) for s in sections)
    for fmt in FORMATS:
        text = render_document({"quick": sections}, fmt)
        assert "nan" not in text.lower()
    document = json.loads(render_document({"quick": sections}, "json"))["matrices"]["quick"]
    assert document["perplexity"]["rows"][0]["best"] is True


def test_only_the_asked_tables_and_unknown_names_fail(frame):
    assert [s.key for s in tables.build_sections(frame, which=("memory",))] == ["memory"]
    with pytest.raises(BenchError, match="unknown table"):
        tables.build_sections(frame, which=("speed",))


def _variants(summaries):
    """Cells that differ only in schedule, lr or a plugin's own key, next to a model change."""
    base = summaries[1]  # lstm-L1-adamw
    cells = []
    for i, (schedule, lr, plugin_key) in enumerate([("cosine", 3e-4, 0.5), ("wsd", 3e-4, 0.5), ("cosine", 1e-3, 0.5),
                                                    ("cosine", 3e-4, 0.9)]):
        cell = json.loads(json.dumps(base))
        cell.update(id=f"id{i:010d}", name=f"lstm-L1-adamw-{i}")
        cell["config"].update(schedule=schedule, lr=lr, my_plugin_gate=plugin_key, n_hidden=64,
                              betas=[0.9, 0.95], checkpoint=i % 2 == 0)
        cells.append(cell)
    other = json.loads(json.dumps(summaries[2]))  # gpt1: its own default width, no plugin key
    other["config"].update(schedule="cosine", lr=3e-4, n_embd=256, betas=[0.9, 0.95])
    return [*cells, other]


def test_every_varying_axis_is_a_column_and_nothing_else(summaries):
    frame = summaries_frame(_variants(summaries))
    assert tables.varying_axes(frame) == ["lr", "schedule", "my_plugin_gate"]
    table = tables.perplexity_table(frame)
    assert list(table.columns[:8]) == ["Cell", "Cell id", "Architecture", "Layers", "Optimizer", "lr", "schedule",
                                       "my_plugin_gate"]
    rows = table[["schedule", "lr", "my_plugin_gate"]].values.tolist()
    assert len({tuple(r) for r in rows[:4]}) == 4  # the four lstm cells no longer look identical


def test_people_see_axes_as_written_machines_also_get_name_and_id(summaries):
    sections = tables.build_sections(summaries_frame(_variants(summaries)), which=("perplexity",))
    github = render_document({"m": sections}, "github")
    header = github.splitlines()[2]
    assert " lr |" in header and "schedule" in header and "my_plugin_gate" in header and "Cell id" not in header
    assert "0.0003" in github and "0.001" in github  # not the two decimals of a perplexity
    csv_header = render_document({"m": sections}, "csv").splitlines()[0]
    assert csv_header.startswith("Cell,Cell id,Architecture,Layers,Optimizer,lr,schedule,my_plugin_gate,")
    rows = json.loads(render_document({"m": sections}, "json"))["matrices"]["m"]["perplexity"]["rows"]
    assert rows[0]["Cell"] == "lstm-L1-adamw-0" and rows[0]["Cell id"] == "id0000000000"
    assert rows[2]["lr"] == 0.001 and rows[1]["schedule"] == "wsd"
