import json
import os
import stat

import pytest

from bench import cli, fileio
from bench.store import CellRecord, ResultStore, matrix_names
from tests.conftest import TINY_DEFAULTS


def _finished(path, cell_id="aaaa", status="ok") -> CellRecord:
    record = CellRecord(path / cell_id)
    record.write_config({"id": cell_id, "name": cell_id, "config": {}})
    record.write_metrics([{"kind": "epoch", "epoch": 1, "step": 10, "val_loss": 2.0}])
    fileio.atomic_write_bytes(record.path / "best.pt", b"weights" * 100)
    record.write_summary({"id": cell_id, "name": cell_id, "status": status, "best_val_ppl": 3.1})
    return record


def test_written_files_get_the_umask_permissions_not_the_temp_files_private_ones(tmp_path):
    record = CellRecord(tmp_path / "cell")
    record.write_config({"id": "cell"})
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(os.stat(record.path / "config.json").st_mode) == 0o666 & ~mask


def test_store_lists_cells_with_a_config_and_matrices_with_cells(tmp_path):
    results = ResultStore(tmp_path, "demo")
    finished = results.cell("aaaa")
    finished.write_config({"id": "aaaa"})
    finished.write_summary({"id": "aaaa", "status": "ok", "best_val_ppl": 3.1})
    started = results.cell("bbbb")
    started.write_config({"id": "bbbb"})
    (results.path / "not-a-cell").mkdir()
    assert [r.path.name for r in results.records()] == ["aaaa", "bbbb"]
    assert [(s["id"], s["best_val_ppl"]) for s in results.summaries()] == [("aaaa", 3.1)]
    assert finished.is_complete and not started.is_complete
    assert matrix_names(tmp_path) == ["demo"]


def test_metrics_round_trip_as_json_lines(tmp_path):
    record = CellRecord(tmp_path / "cell")
    rows = [{"epoch": 1, "val_loss": 2.0}, {"epoch": 2, "val_loss": 1.5}]
    record.write_metrics(rows)
    assert record.read_metrics() == rows
    assert [json.loads(line) for line in (record.path / "metrics.jsonl").read_text().splitlines()] == rows


# -- fault 1: a damaged result file is set aside with one warning, never a traceback ------------

DAMAGED_SUMMARIES = {
    "invalid-utf8": (b'{"id": "aaaa", "status": "ok", "name": "\xff\xfe"}', "is not valid UTF-8"),
    "not-json": (b'{"id": "aaaa", "status": ', "is not valid JSON"),
    "a-string": (b'"ok"', "holds a JSON string, not an object"),
    "no-id": (b'{"status": "ok"}', "lacks 'id'"),
    "a-folder": (None, "cannot be read"),
}


@pytest.mark.parametrize("damage", DAMAGED_SUMMARIES)
def test_a_damaged_summary_is_moved_aside_with_one_warning(tmp_path, capsys, damage):
    content, problem = DAMAGED_SUMMARIES[damage]
    record = _finished(tmp_path)
    path = record.path / "summary.json"
    path.unlink()
    path.mkdir() if content is None else path.write_bytes(content)
    capsys.readouterr()
    assert record.read_summary() is None
    err = capsys.readouterr().err
    assert err == (f"warning: {path} {problem}" + err.split(problem, 1)[1]) and err.count("\n") == 1, err
    assert "moved it to summary.json.corrupt; the cell counts as unfinished" in err
    assert (record.path / "summary.json.corrupt").exists() and not path.exists()
    assert content is None or (record.path / "summary.json.corrupt").read_bytes() == content
    assert not record.is_complete and record.read_summary() is None
    assert capsys.readouterr().err == ""  # warned once: the file is out of the way now


def test_store_summaries_skip_a_damaged_cell_and_keep_the_others(tmp_path, capsys):
    results = ResultStore(tmp_path, "demo")
    _finished(results.path, "aaaa")
    _finished(results.path, "bbbb")
    (results.path / "aaaa" / "summary.json").write_bytes(b'"ok"')
    assert [s["id"] for s in results.summaries()] == ["bbbb"]
    assert "aaaa/summary.json holds a JSON string" in capsys.readouterr().err
    assert [r.path.name for r in results.records()] == ["aaaa", "bbbb"]


def test_a_damaged_config_is_moved_aside(tmp_path, capsys):
    record = _finished(tmp_path)
    (record.path / "config.json").write_bytes(b"\x00\x01")
    assert record.read_config() is None
    assert "config.json is not valid JSON" in capsys.readouterr().err
    assert (record.path / "config.json.corrupt").exists()
    assert record.read_summary()["status"] == "ok"  # the result itself is still there


def test_metrics_with_a_torn_line_are_moved_aside(tmp_path, capsys):
    record = CellRecord(tmp_path / "cell")
    record.write_metrics([{"kind": "log", "step": 1}, {"kind": "log", "step": 2}])
    with open(record.path / "metrics.jsonl", "ab") as handle:
        handle.write(b'{"kind": "epo')
    assert record.read_metrics() == []
    err = capsys.readouterr().err
    assert "metrics.jsonl line 3 is not valid JSON" in err and "moved it to metrics.jsonl.corrupt" in err


# Issue 18: valid JSON with wrong types is damage too, warned about and set aside like the above.
WRONG_TYPES = {
    "files-a-string": ("summary.json", lambda d: d.update(files="x"), 'has "files": "x", not an object'),
    "status-a-number": ("summary.json", lambda d: d.update(status=5), 'has "status": 5, not a string'),
    "status-unknown": ("summary.json", lambda d: d.update(status="done"), 'has "status": "done", not one of ok,'),
    "loss-a-string": ("summary.json", lambda d: d.update(best_val_loss="abc"),
                      'has "best_val_loss": "abc", not a number or null'),
    "loss-nan": ("summary.json", lambda d: d.update(best_val_loss=float("nan")),
                 'has "best_val_loss": NaN in a finished (ok) result, which needs a finite number'),
    "fingerprint-a-string": ("summary.json", lambda d: d["files"].update({"best.pt": "x"}),
                             'has "files"."best.pt": "x", not an object with bytes and sha256'),
    "config-lr-text": ("config.json", lambda d: d["config"].update(lr="fast"),
                       'has "config"."lr": "fast", of the wrong type'),
    "config-lr-negative": ("config.json", lambda d: d["config"].update(lr=-1.0),
                           'has "config"."lr": -1.0, which must be > 0'),
    "summary-config-lr": ("summary.json", lambda d: d["config"].update(lr="fast"),
                          'has "config"."lr": "fast", of the wrong type'),
}


@pytest.mark.parametrize("case", WRONG_TYPES)
def test_a_field_of_the_wrong_type_is_damage_with_one_warning(tmp_path, capsys, case):
    name, damage, problem = WRONG_TYPES[case]
    record = _finished(tmp_path)
    for which in ("config.json", "summary.json"):  # both carry the cell's configuration
        data = json.loads((record.path / which).read_text())
        data["config"] = {"lr": 0.001, "batch_size": 8}
        (record.path / which).write_text(json.dumps(data))
    path = record.path / name
    data = json.loads(path.read_text())
    damage(data)
    path.write_text(json.dumps(data))
    capsys.readouterr()
    assert (record.read_summary() if name == "summary.json" else record.read_config()) is None
    err = capsys.readouterr().err
    assert err == f"warning: {path} {problem}" + err.split(problem, 1)[1] and err.count("\n") == 1, err
    assert err.endswith(f"moved it to {name}.corrupt; the cell counts as unfinished\n")
    assert not path.exists() and (record.path / f"{name}.corrupt").exists()


def test_a_metrics_row_with_a_text_loss_is_damage(tmp_path, capsys):
    record = CellRecord(tmp_path / "cell")
    record.write_metrics([{"kind": "epoch", "step": 1, "val_loss": 2.0}, {"kind": "epoch", "step": 2, "val_loss": "x"}])
    assert record.read_metrics() == []
    assert 'metrics.jsonl line 2 has "val_loss": "x", not a number; moved it' in capsys.readouterr().err


# -- fault 2: best.pt and metrics.jsonl are fingerprinted in the summary and verified on read ----

def test_the_summary_records_size_and_sha256_of_best_pt_and_metrics(tmp_path):
    record = _finished(tmp_path)
    files = record.read_summary()["files"]
    for name in ("best.pt", "metrics.jsonl"):
        assert files[name] == {"bytes": (record.path / name).stat().st_size,
                               "sha256": fileio.sha256_file(record.path / name)}
    # Rewriting the summary later (HellaSwag fields) keeps what was recorded at the end of training.
    (record.path / "best.pt").write_bytes(b"damaged")
    record.write_summary({**record.read_summary(), "hellaswag_acc": 0.3})
    assert record.read_summary()["files"] == files


@pytest.mark.parametrize("name", ["best.pt", "metrics.jsonl"])
def test_a_truncated_file_makes_a_finished_cell_unfinished(tmp_path, capsys, name):
    record = _finished(tmp_path)
    path = record.path / name
    size = path.stat().st_size
    path.write_bytes(path.read_bytes()[: size // 2])
    capsys.readouterr()
    assert record.read_summary(verify_files=True) is None
    assert capsys.readouterr().err == (f"warning: {path} does not match summary.json ({size // 2} bytes, "
                                       f"{size} recorded); the next `bench run` trains this cell again\n")
    assert record.read_summary()["status"] == "ok"  # reports still show the figures


def test_a_truncated_metrics_file_of_a_finished_cell_reads_as_empty(tmp_path, capsys):
    record = _finished(tmp_path)
    path = record.path / "metrics.jsonl"
    path.write_bytes(path.read_bytes()[:-1] + b"\n"[:0])
    assert record.read_metrics() == []
    assert "metrics.jsonl does not match summary.json" in capsys.readouterr().err


def test_a_missing_best_pt_is_a_mismatch_and_an_unfinished_cell_is_not_checked(tmp_path, capsys):
    record = _finished(tmp_path)
    (record.path / "best.pt").unlink()
    assert record.read_summary(verify_files=True) is None
    assert "best.pt does not match summary.json (missing)" in capsys.readouterr().err
    paused = _finished(tmp_path, "bbbb", status="interrupted")
    paused.write_metrics([{"kind": "log", "step": 99}])  # a resumed run rewrites its metrics
    assert paused.read_summary(verify_files=True)["status"] == "interrupted"
    assert paused.read_metrics() == [{"kind": "log", "step": 99}]
    assert capsys.readouterr().err == ""


# -- end to end: one damaged cell never blocks the matrix -----------------------------------------

E2E_MATRIX = TINY_DEFAULTS.replace("epochs = 2", "epochs = 1") + """
model = "lstm"
n_layer = 1

[matrix]
optimizer = ["sgd", "adamw", "momentum"]
"""


def test_run_resumes_every_other_cell_around_damaged_results_and_report_goes_on(tmp_path, write_matrix, capsys):
    matrix, outputs = write_matrix(E2E_MATRIX, name="damaged"), str(tmp_path / "outputs")
    run = ["run", str(matrix), "--device", "cpu", "--outputs", outputs]
    assert cli.main(run) == 0
    cells = sorted(ResultStore(outputs, "damaged").records(), key=lambda r: r.read_summary()["name"])
    broken_summary, broken_weights, intact = cells
    (broken_summary.path / "summary.json").write_bytes(b'{"id": "\xff"}')
    weights = broken_weights.path / "best.pt"
    weights.write_bytes(weights.read_bytes()[:100])
    kept = (intact.path / "summary.json").read_bytes()
    capsys.readouterr()

    assert cli.main(run) == 0
    err = capsys.readouterr().err
    assert f"warning: {broken_summary.path / 'summary.json'} is not valid UTF-8 (byte 0xff at offset 8); " \
           "moved it to summary.json.corrupt; the cell counts as unfinished\n" in err
    assert f"warning: {weights} does not match summary.json (100 bytes," in err
    assert "2 trained, 1 already complete, 0 failed" in err and "Traceback" not in err
    assert (intact.path / "summary.json").read_bytes() == kept
    for record in cells:
        assert record.read_summary(verify_files=True)["status"] == "ok"

    (intact.path / "summary.json").write_bytes(b'"ok"')
    assert cli.main(["report", "--outputs", outputs, "--format", "github"]) == 0
    out, err = capsys.readouterr()
    assert f"warning: {intact.path / 'summary.json'} holds a JSON string, not an object" in err
    perplexity = out.split("## damaged: perplexity")[1].split("\n## ")[0]
    assert "Traceback" not in err and sum("lstm" in line for line in perplexity.splitlines()) == 2


def test_wrong_types_in_a_finished_summary_never_stop_run_or_plot(tmp_path, write_matrix, capsys):
    """Issue 18: `"files": "x"` killed `bench run` and `bench plot` with an AttributeError."""
    matrix, outputs = write_matrix(E2E_MATRIX, name="typed"), str(tmp_path / "outputs")
    run = ["run", str(matrix), "--device", "cpu", "--outputs", outputs]
    assert cli.main(run) == 0
    damaged = ResultStore(outputs, "typed").records()[0]
    summary = json.loads((damaged.path / "summary.json").read_text())
    (damaged.path / "summary.json").write_text(json.dumps({**summary, "files": "x"}))
    capsys.readouterr()
    assert cli.main(["plot", "--outputs", outputs, "--out", str(tmp_path / "plots")]) == 0
    assert 'summary.json has "files": "x", not an object; moved it' in capsys.readouterr().err
    assert cli.main(run) == 0
    assert "1 trained, 2 already complete, 0 failed" in capsys.readouterr().err


def test_run_sweeps_orphan_temp_files_in_cell_folders_and_the_token_cache(tmp_path, write_matrix, capsys):
    import time

    from bench.data.token_cache import tokens_dir

    matrix, outputs = write_matrix(E2E_MATRIX, name="damaged"), tmp_path / "outputs"
    old = time.time() - 3600
    orphans = [outputs / "damaged" / "0123456789ab" / ".best.pt.a1b2c3d4.tmp",
               outputs / "damaged" / "0123456789ab" / "checkpoints" / ".step-00000003.zz9_abcd.tmp",
               tokens_dir() / ".0123456789abcdef-gpt2.uint16.n5.0123456789abcdef.bin.k0k0k0k0.tmp"]
    keep = outputs / "damaged" / "0123456789ab" / "notes.tmp"
    for path in orphans + [keep]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\0" * 4900)
        os.utime(path, (old, old))
    assert cli.main(["run", str(matrix), "--device", "cpu", "--outputs", str(outputs), "--filter", "sgd"]) == 0
    assert not any(p.exists() for p in orphans) and keep.exists()
    assert "bench: removed 3 temp file(s) left by interrupted writes, e.g. " in capsys.readouterr().err
