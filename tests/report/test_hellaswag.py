"""HellaSwag columns and table from summaries: raw numbers for machines, four decimals for
people, gaps as '-', notes shown."""

from __future__ import annotations

import json

import pandas as pd

from bench.report import hellaswag
from bench.report.tables import render


def summaries() -> list[dict]:
    config = {"model": "gpt2-tiny", "n_layer": 2, "optimizer": "adamw", "dataset": "tinyshakespeare"}
    return [
        {"id": "a", "name": "scored", "status": "ok", "config": config, "best_val_ppl": 400.0,
         "hellaswag_acc": 0.25123, "hellaswag_acc_stderr": 0.00433, "hellaswag_acc_norm": 0.26789,
         "hellaswag_acc_norm_stderr": 0.00442, "hellaswag_items": 10042, "hellaswag_items_per_s": 9.87,
         "hellaswag_note": None},
        {"id": "b", "name": "tokens", "status": "ok", "config": {**config, "dataset": "synthetic"},
         "best_val_ppl": 5.0, "hellaswag_note": "skipped: trained on token ids"},
        {"id": "c", "name": "never asked", "status": "ok", "config": config, "best_val_ppl": 300.0},
    ]


def frame(rows) -> pd.DataFrame:
    # The same flattening the report uses: every scalar summary field becomes a column.
    return pd.DataFrame([{**{k: v for k, v in s.items() if k != "config"}, "model": s["config"]["model"],
                          "layers": s["config"]["n_layer"], "optimizer": s["config"]["optimizer"],
                          "dataset": s["config"]["dataset"]} for s in rows])


def test_only_frames_with_hellaswag_fields_get_hellaswag_output():
    assert hellaswag.has_hellaswag(frame(summaries()))
    assert hellaswag.has_hellaswag(frame(summaries()[1:2]))  # a note alone is worth showing
    assert not hellaswag.has_hellaswag(frame(summaries()[2:]))


def test_accuracy_columns_go_before_status_with_four_decimals():
    data = frame(summaries())
    table = pd.DataFrame({"Model": data["model"], "Val PPL": data["best_val_ppl"], "Status": data["status"]})
    out = hellaswag.with_accuracy_columns(table, data)
    assert list(out.columns) == ["Model", "Val PPL", "HellaSwag acc", "HellaSwag acc_norm", "Status"]
    assert out["HellaSwag acc"].tolist()[0] == 0.25123
    assert out["HellaSwag acc_norm"].tolist()[0] == 0.26789
    text = render(out, "github")
    assert "0.2512" in text and "0.2679" in text and "nan" not in text
    rows = [line.split("|")[3:5] for line in text.splitlines()[2:]]
    assert [cell.strip() for cell in rows[1]] == ["-", "-"] and [cell.strip() for cell in rows[2]] == ["-", "-"]
    assert json.loads(render(out, "json"))[0]["HellaSwag acc"] == 0.25123
    assert json.loads(render(out, "json"))[1]["HellaSwag acc"] is None


def test_hellaswag_table_shows_errors_items_and_notes():
    table = hellaswag.hellaswag_table(frame(summaries()))
    first = table.iloc[0]
    assert (first["acc"], first["acc stderr"], first["acc_norm"], first["Items"], first["Items/s"]) == (
        0.25123, 0.00433, 0.26789, 10042, 9.87)
    assert table.iloc[1]["Note"] == "skipped: trained on token ids" and pd.isna(table.iloc[1]["acc"])
    text = render(table, "markdown")
    for shown in ("0.2512", "0.0043", "0.2679", "0.0044", "10,042", "9.9"):
        assert shown in text
    assert "10042.00" not in text and "nan" not in text
    assert json.loads(render(table, "json"))[0]["Items"] == 10042
