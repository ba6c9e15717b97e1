"""HellaSwag in a matrix run, in reports and in `bench eval hellaswag`, end to end and offline."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from bench.errors import ConfigError
from bench.evaluation import cell_hellaswag
from bench.evaluation.cell_hellaswag import TRACEBACK_FILE, check_eval_settings, score_in_run, wanted
from bench.registry import build_registry, plugin_manager
from bench.store import CellRecord
from tests.evaluation.conftest import cell_dirs, summary, write_hellaswag, write_matrix_files


def test_matrix_run_report_and_rescore(bench_cli, offline_hf, monkeypatch, tmp_path, capsys):
    from bench.cli import main

    data = tmp_path / "data"
    write_hellaswag(data)
    env = {"BENCH_DATA_DIR": str(data), "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
           "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    # The run is a real `bench` process, offline from its first import.
    run = bench_cli("run", str(write_matrix_files(tmp_path / "m", hellaswag=True)), "--device", "cpu", env=env)
    assert run.returncode == 0, run.stderr
    assert "2 trained" in run.stderr and "0 failed" in run.stderr
    dirs = cell_dirs(tmp_path / "outputs")
    text, tokens = summary(dirs["text"]), summary(dirs["tokens"])
    assert text["status"] == "ok" and text["hellaswag_items"] == 4 and text["hellaswag_note"] is None
    assert 0.0 <= text["hellaswag_acc"] <= 1.0 and 0.0 <= text["hellaswag_acc_norm"] <= 1.0
    assert text["hellaswag_source"].endswith("hellaswag/hellaswag_val.jsonl")
    # The token-id cell is skipped with a note, and still counts as finished.
    assert tokens["status"] == "ok" and "hellaswag_acc" not in tokens
    assert "token ids" in tokens["hellaswag_note"]
    assert "hellaswag acc" in run.stderr and "hellaswag skipped" in run.stderr

    monkeypatch.setenv("BENCH_DATA_DIR", str(data))  # offline_hf already cut the network in here
    assert main(["report", "--outputs", str(tmp_path / "outputs"), "--format", "github"]) == 0
    report = capsys.readouterr().out
    assert "HellaSwag acc" in report and "HellaSwag acc_norm" in report and "## hs: HellaSwag" in report
    assert f"{text['hellaswag_acc']:.4f}" in report and "token ids" in report

    assert main(["eval", "hellaswag", "--run", str(dirs["text"]), "--limit", "2", "--device", "cpu"]) == 0
    assert "acc_norm" in capsys.readouterr().out and summary(dirs["text"])["hellaswag_items"] == 2

    monkeypatch.setenv("BENCH_DATA_DIR", str(tmp_path / "nothing"))
    assert main(["eval", "hellaswag", "--run", str(dirs["text"])]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "hellaswag/hellaswag_val.jsonl" in error
    assert summary(dirs["text"])["hellaswag_items"] == 2  # an error leaves the stored score alone


@pytest.fixture
def text_cell(trained, tmp_path) -> CellRecord:
    return CellRecord(Path(shutil.copytree(trained["text"], tmp_path / "cell")))


def test_an_lm_eval_failure_becomes_a_note_and_a_traceback(text_cell, hellaswag_data, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("task exploded\nsecond line")

    monkeypatch.setattr("bench.evaluation.hellaswag.run_hellaswag", broken)
    lines = []
    score_in_run(text_cell, {"hellaswag": True, "limit": 2, "batch_size": 4}, registry=build_registry(plugin_manager()),
                 device=torch.device("cpu"), say=lines.append, prefix="[1/1] cell")
    stored = text_cell.read_summary()
    assert stored["status"] == "ok" and "hellaswag_acc" not in stored
    assert stored["hellaswag_note"].startswith("failed: RuntimeError: task exploded")
    assert "task exploded" in (text_cell.path / TRACEBACK_FILE).read_text()
    assert lines == [f"[1/1] cell: hellaswag {stored['hellaswag_note']}"]


def test_missing_data_in_a_run_is_a_note(text_cell, offline_hf, monkeypatch, tmp_path):
    monkeypatch.setenv("BENCH_DATA_DIR", str(tmp_path / "nothing"))
    score_in_run(text_cell, {"hellaswag": True, "limit": 2, "batch_size": 4}, registry=build_registry(plugin_manager()),
                 device=torch.device("cpu"), say=lambda line: None, prefix="")
    assert "hellaswag/hellaswag_val.jsonl" in text_cell.read_summary()["hellaswag_note"]


def test_scores_are_kept_until_the_limit_changes(text_cell, hellaswag_data):
    registry, evaluation = build_registry(plugin_manager()), {"hellaswag": True, "limit": 2, "batch_size": 4}
    assert wanted(text_cell.read_summary(), evaluation)
    fields = cell_hellaswag.score_cell(text_cell.path, registry, torch.device("cpu"), limit=2)
    assert fields["hellaswag_items"] == 2 and text_cell.read_summary()["hellaswag_acc"] == fields["hellaswag_acc"]
    assert not wanted(text_cell.read_summary(), evaluation)
    assert wanted(text_cell.read_summary(), {**evaluation, "limit": 0})
    assert not wanted(text_cell.read_summary(), {**evaluation, "hellaswag": False})


def test_log_samples_keeps_one_line_per_item_in_the_cell_folder(text_cell, hellaswag_data, capsys):
    import json

    from bench.cli import main

    evaluation = {"hellaswag": True, "limit": 3, "batch_size": 4, "log_samples": True}
    assert main(["eval", "hellaswag", "--run", str(text_cell.path), "--limit", "3", "--device", "cpu"]) == 0
    assert summary(text_cell.path)["hellaswag_samples_file"] is None
    assert wanted(text_cell.read_summary(), evaluation)  # asked for samples, none kept yet
    assert main(["eval", "hellaswag", "--run", str(text_cell.path), "--limit", "3", "--device", "cpu",
                 "--log-samples"]) == 0
    fields = summary(text_cell.path)
    assert fields["hellaswag_samples_file"] == cell_hellaswag.SAMPLES_FILE and not wanted(fields, evaluation)
    items = [json.loads(line) for line in (text_cell.path / cell_hellaswag.SAMPLES_FILE).read_text().splitlines()]
    assert [item["doc_id"] for item in items] == [0, 1, 2]
    for item in items:
        assert len(item["endings"]) == len(item["loglikelihoods"]) == 4 and 0 <= item["gold"] < 4
        best = max(range(4), key=lambda i: item["loglikelihoods"][i])
        assert item["acc"] == float(best == item["gold"])
    assert sum(item["acc"] for item in items) / 3 == pytest.approx(fields["hellaswag_acc"])
    assert sum(item["acc_norm"] for item in items) / 3 == pytest.approx(fields["hellaswag_acc_norm"])


def test_eval_command_on_a_token_cell_is_a_note_not_an_error(trained, tmp_path, capsys):
    from bench.cli import main

    cell = shutil.copytree(trained["tokens"], tmp_path / "tokens")
    assert main(["eval", "hellaswag", "--run", str(cell)]) == 0
    assert "hellaswag skipped" in capsys.readouterr().err
    assert "token ids" in summary(cell)["hellaswag_note"]


def test_eval_command_rejects_a_folder_that_is_not_a_cell(tmp_path, capsys):
    from bench.cli import main

    assert main(["eval", "hellaswag", "--run", str(tmp_path)]) == 2
    assert "not a cell folder" in capsys.readouterr().err


@pytest.mark.parametrize("setting, message", [
    ({"hellaswag": "yes"}, "eval.hellaswag must be true or false"),
    ({"limit": -1}, "eval.limit must be an integer >= 0"),
    ({"batch_size": 0}, "eval.batch_size must be an integer >= 1"),
    ({"log_samples": 1}, "eval.log_samples must be true or false"),
])
def test_impossible_eval_settings_are_config_errors(setting, message):
    with pytest.raises(ConfigError, match=message):
        check_eval_settings({"hellaswag": True, "limit": 0, "batch_size": 16, **setting}, "m.toml")


def test_scores_are_not_written_over_a_summary_set_aside_as_damaged(tmp_path, capsys):
    record = CellRecord(tmp_path / "cell")
    record.path.mkdir()
    (record.path / "summary.json").write_text("{not json")
    cell_hellaswag.write_fields(record, {"hellaswag_acc": 0.25})
    assert not (record.path / "summary.json").exists()  # set aside, not replaced by the score alone
    assert list(record.path.glob("summary.json.corrupt*")) and "summary.json" in capsys.readouterr().err


def test_a_sweep_scores_its_final_cells_and_not_its_trials(hellaswag_data, tmp_path, capsys):
    from bench.cli import main

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("The quick brown fox jumps over the lazy dog. A man is sitting on a roof.\n" * 20)
    matrix = tmp_path / "hsweep.toml"
    matrix.write_text(f"""
[defaults]
model = "lstm"
optimizer = "adam"
dataset = "text"
tokenizer = "byte"
train_path = "{corpus}"
valid_path = "{corpus}"
test_path = "{corpus}"
seq_len = 16
batch_size = 4
max_steps = 4
n_embd = 16
n_hidden = 16
[sweep]
strategy = "random"
trials = 2
final_seeds = [1]
[sweep.space]
lr = {{ loguniform = [1e-3, 1e-1] }}
[eval]
hellaswag = true
limit = 2
batch_size = 4
""")
    outputs = tmp_path / "outputs"
    assert main(["run", str(matrix), "--device", "cpu", "--outputs", str(outputs)]) == 0
    summaries = [json.loads(p.read_text()) for p in (outputs / "hsweep").glob("*/summary.json")]
    final = [s for s in summaries if s["config"]["seed"] == 1 and "hellaswag_acc" in s]
    assert len(summaries) == 3 and len(final) == 1 and final[0]["hellaswag_items"] == 2
    assert sum("hellaswag_acc" in s for s in summaries) == 1  # the two trials were not scored
