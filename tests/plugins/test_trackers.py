"""The built-in trackers, for real: train a tiny cell with each, then read back what the tool wrote
with that tool's own reader (TensorBoard's event reader, W&B's record protocol, MLflow's client)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from bench.cli import main
from tests.conftest import TINY_DEFAULTS

MATRIX = """
name = "tracked"
seeds = [0]
{defaults}
eval_every = 5
trackers = {trackers}

[matrix]
model = ["lstm"]
optimizer = ["adamw"]
"""


def _train(write_matrix, tmp_path: Path, trackers: str, *flags: str) -> Path:
    path = write_matrix(MATRIX.format(defaults=TINY_DEFAULTS, trackers=trackers))
    outputs = tmp_path / "outputs"
    assert main(["run", str(path), "--outputs", str(outputs), *flags]) == 0
    return outputs / "tracked"


def test_tensorboard_event_files_hold_the_logged_curves(write_matrix, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = _train(write_matrix, tmp_path, '["tensorboard"]')
    events = EventAccumulator(str(folder / "tensorboard" / "lstm-L1-adamw"))
    events.Reload()
    train = [(e.step, e.value) for e in events.Scalars("train/loss")]
    val = [e.step for e in events.Scalars("val/loss")]
    assert [step for step, _ in train] == [5, 10, 15, 20]  # log_every = 5 over 2 epochs of 10 steps
    assert val == [5, 10, 15, 20]  # eval_every = 5 and each epoch end (same steps here)
    assert all(value > 0 for _, value in train)
    assert events.Scalars("final/test_ppl")[0].value > 1


def _wandb_records(run_file: Path) -> list:
    """Every record of an offline W&B run file: a 7-byte file header, then 32 KiB blocks of records,
    each a 7-byte header (crc, length, type: full/first/middle/last) and a slice of a protobuf."""
    from wandb.proto import wandb_internal_pb2

    data, pos, block, pending, records = run_file.read_bytes(), 7, 32768, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 and length == 0:
            break
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            records.append(wandb_internal_pb2.Record.FromString(pending))
            pending = b""
    return records


def test_wandb_offline_run_is_named_after_the_cell_and_grouped_by_matrix(write_matrix, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    folder = _train(write_matrix, tmp_path, "[]", "--tracker", "wandb")
    [run_file] = (folder / "wandb").glob("offline-run-*/run-*.wandb")
    records = _wandb_records(run_file)
    [run] = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert (run.display_name, run.run_group, run.project) == ("lstm-L1-adamw", "tracked", "tracked")
    # A key arrives whole (``key``) or as its path (``nested_key``), depending on the W&B version.
    history = [{item.key or "/".join(item.nested_key): item.value_json for item in r.history.item} for r in records
               if r.WhichOneof("record_type") == "history"]
    train_steps = [int(row["_step"]) for row in history if "train/loss" in row]
    assert train_steps == [5, 10, 15, 20]
    assert all("val/loss" in row for row in history if int(row["_step"]) in (5, 10, 15, 20))


def test_mlflow_run_holds_params_and_metric_history(write_matrix, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    folder = _train(write_matrix, tmp_path, '["mlflow"]')
    client = MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tracked")
    [run] = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "lstm-L1-adamw" and run.info.status == "FINISHED"
    assert run.data.params["optimizer"] == "adamw" and run.data.tags["bench.cell_id"]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == [5, 10, 15, 20]
    assert len(client.get_metric_history(run.info.run_id, "val/ppl")) == 4
