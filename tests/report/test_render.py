from __future__ import annotations

import csv
import io
import json

import pandas as pd
import pytest

from bench.errors import BenchError
from bench.report.render import FORMATS, Section, render, render_document


@pytest.fixture
def table():
    return pd.DataFrame({
        "Architecture": ["lstm", "gpt_1", None],
        "Layers": [1.0, 2.0, float("nan")],
        "Val PPL": [3.14159, float("nan"), None],
        "Tokens/s": [123456.7, 98765.4, None],
        "Train FLOPs": [5.3084e10, None, 1.2e15],
        "Source": ["a & b", "x|y", None],
        "best": [True, False, None],
    })


@pytest.mark.parametrize("fmt", [f for f in FORMATS if f != "json"])
def test_missing_values_print_as_dash_never_nan(table, fmt):
    text = render(table, fmt)
    assert "nan" not in text.lower()
    assert "None" not in text
    assert "-" in text


def test_column_formats_for_people(table):
    text = render(table, "github")
    assert "123,457" in text  # tokens/s with thousands separators
    assert "53.1 G" in text and "1.2 P" in text  # FLOPs with SI prefixes
    assert "3.14" in text and "3.14159" not in text
    gpt_row = next(line for line in text.splitlines() if "gpt_1" in line)
    assert gpt_row.split("|")[2].strip() == "2"  # layers as integers, not 2.00


@pytest.mark.parametrize("fmt, bold", [("github", "**lstm**"), ("markdown", "**lstm**"),
                                       ("latex", r"\textbf{lstm}"), ("html", "<b>lstm</b>")])
def test_best_rows_are_bold_and_the_marker_column_is_hidden(table, fmt, bold):
    text = render(table, fmt)
    assert bold in text
    assert "gpt" in text and "**gpt" not in text and r"\textbf{gpt" not in text
    assert "best" not in text


def test_text_is_escaped_per_format(table):
    assert r"gpt\_1" in render(table, "latex") and r"a \& b" in render(table, "latex")
    assert "a &amp; b" in render(table, "html")
    assert r"x\|y" in render(table, "github")


def test_csv_keeps_raw_numbers_and_the_best_column(table):
    rows = list(csv.DictReader(io.StringIO(render(table, "csv"))))
    assert rows[0]["best"] == "True" and rows[0]["Val PPL"] == "3.14159"
    assert rows[1]["Val PPL"] == "-" and rows[2]["Architecture"] == "-"


def test_json_is_valid_with_nulls_for_missing(table):
    rows = json.loads(render(table, "json"))
    assert rows[0]["Val PPL"] == pytest.approx(3.14159) and rows[1]["Val PPL"] is None
    assert rows[0]["best"] is True


def test_unknown_format_is_a_user_error(table):
    with pytest.raises(BenchError, match="github, markdown"):
        render(table, "xlsx")


def test_document_headings_and_notes_per_format(table):
    doc = {"quick": [Section("time", "time", table, ["a note"]), Section("memory", "memory", table)]}
    assert "## quick: time" in render_document(doc, "github") and "a note" in render_document(doc, "github")
    assert "% quick: memory" in render_document(doc, "latex")
    assert "<h2>quick: time</h2>" in render_document(doc, "html")
    assert "# quick: time" in render_document(doc, "csv")
    parsed = json.loads(render_document(doc, "json"))
    assert parsed["matrices"]["quick"]["time"]["notes"] == ["a note"]
    single = render_document({"quick": [Section("time", "time", table)]}, "csv")
    assert single.splitlines()[0].startswith("Architecture")  # a lone table stays plain CSV


def test_small_numbers_keep_significant_digits_not_two_decimals():
    """Issue 18: lr 0.001 printed as '0.00'."""
    text = render(pd.DataFrame({"Val PPL": [12.3456], "lr": [0.001], "wd": [3.2e-05], "zero": [0.0]}), "github")
    assert [c.strip() for c in text.splitlines()[2].strip("|").split("|")] == ["12.35", "0.001", "3.2e-05", "0.00"]


def test_tables_without_an_architecture_column_show_the_cell_name():
    """Issue 18: the versions and estimate-vs-actual tables could not be matched to cells."""
    from bench.report.provenance import provenance_table

    frame = pd.DataFrame({"name": ["gpt1-L1-adamw", "lstm-L1-sgd"], "id": ["a1", "b2"],
                          "from_model": ["bench-lm 0.1.0"] * 2, "torch_version": ["2.13.0"] * 2})
    text = render(provenance_table(frame), "github")
    assert text.splitlines()[0].split("|")[1].strip() == "Cell"
    assert "gpt1-L1-adamw" in text and "lstm-L1-sgd" in text and "a1" not in text
    identified = render(pd.DataFrame({"Cell": ["x-cell"], "Architecture": ["gpt1"], "Val PPL": [3.0]}), "github")
    assert "x-cell" not in identified  # rows the Architecture column already tells apart


def test_estimate_vs_actual_rows_name_their_cells(tmp_path):
    from bench.report.estimate import estimate_vs_actual

    (tmp_path / "estimate.json").write_text(json.dumps({
        "steps": 20, "device": "cpu", "cost_per_hour": 1.5,
        "cells": [{"id": "a1", "name": "gpt1-L1-adamw", "hours": 0.5, "cost": 0.75}]}))
    section = estimate_vs_actual(tmp_path, [{"id": "a1", "status": "ok", "train_time_s": 1800.0}])
    text = render(section.table, "github")
    row = [c.strip() for c in text.splitlines()[2].strip("|").split("|")]
    assert row[:4] == ["gpt1-L1-adamw", "0.50", "0.50", "1.00"]


def _column(text: str, header: str) -> list[str]:
    """The cells of one column of a github table, read back as a user sees them."""
    lines = [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()]
    index = lines[0].index(header)
    return [row[index] for row in lines[2:]]


def test_rows_that_used_to_collide_print_apart():
    # From a real sweep report: val loss printed 3.68 twice, PPL 51.31 twice, the diff and its CI
    # 0.0004 three times in one row, the Holm p 3.95e-05.
    trials = pd.DataFrame({"Group": ["optimizer=adam", "optimizer=adamw"], "best_val_loss": [3.68049, 3.68092],
                           "Val PPL": [51.308, 51.313], "Mean diff (A-B)": [-0.000432, 0.0131],
                           "Diff CI low": [-0.000443, 0.0102], "Diff CI high": [-0.000420, 0.0160],
                           "p (Holm)": [3.95e-05, 0.0118], "t-test p": [0.0118, 0.0124]})
    text = render(trials, "github")
    assert _column(text, "best_val_loss") == ["3.6805", "3.6809"]  # a loss: 4 decimals
    assert _column(text, "Val PPL") == ["51.308", "51.313"]  # a perplexity gets a third decimal only here
    assert [_column(text, c)[0] for c in ("Mean diff (A-B)", "Diff CI low", "Diff CI high")] == [
        "-0.000432", "-0.000443", "-0.000420"]
    assert _column(text, "p (Holm)") == ["<0.001", "0.012"]
    assert _column(text, "t-test p") == ["0.0118", "0.0124"]  # 0.012 twice at 2 digits


def test_perplexities_keep_two_decimals_when_rows_already_differ():
    text = render(pd.DataFrame({"Val PPL": [39.62, 51.31], "p": [0.2, 0.04]}), "github")
    assert _column(text, "Val PPL") == ["39.62", "51.31"]
    assert _column(text, "p") == ["0.20", "0.040"]


def test_measured_time_and_memory_keep_their_digits_when_rows_collide():
    # Their noise is larger than the digits a collision would add: 383.304 vs 383.299 MiB says nothing.
    table = pd.DataFrame({"Peak RSS (MiB)": [383.3041, 383.2991], "Train time (s)": [0.363, 0.389],
                          "Val loss": [3.68049, 3.68092]})
    text = render(table, "github")
    assert _column(text, "Peak RSS (MiB)") == ["383.30", "383.30"]  # not 383.304 and 383.299
    assert _column(text, "Train time (s)") == ["0.4", "0.4"]
    assert _column(text, "Val loss") == ["3.6805", "3.6809"]  # not a measurement: still refined
