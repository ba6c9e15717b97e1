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
