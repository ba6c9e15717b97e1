"""Built-in experiment trackers: TensorBoard, Weights & Biases and MLflow.

Each is an optional extra (``pip install 'bench-lm[tensorboard]'``, ``[wandb]``, ``[mlflow]``) and
records a cell when its ``trackers`` key (or ``bench run --tracker NAME``) names it. Runs are named
after the cell and grouped by matrix; everything is written under the matrix's results folder unless
the tool's own environment variable points elsewhere:

* ``tensorboard``: event files in ``outputs/<matrix>/tensorboard/<cell name>/``
  (``tensorboard --logdir outputs/<matrix>/tensorboard``);
* ``wandb``: a W&B run in project and group ``<matrix>``, offline unless ``WANDB_MODE`` says
  otherwise, files under ``outputs/<matrix>/wandb/`` (``wandb sync`` uploads them later);
* ``mlflow``: an MLflow run in experiment ``<matrix>``, stored in ``outputs/<matrix>/mlflow.db``
  unless ``MLFLOW_TRACKING_URI`` is set (``mlflow ui --backend-store-uri sqlite:///...``).

Train losses are logged as ``train/loss`` and ``train/lr`` at every ``log_every`` step, validations
as ``val/loss`` and ``val/ppl`` at the step they ran, and the summary's test perplexity at the end.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from bench import Component, hookimpl


def _missing(package: str, extra: str) -> ImportError:
    return ImportError(f"the {package} package is not installed; pip install 'bench-lm[{extra}]'")


def _final_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """The summary's headline numbers that are plain finite floats (failed cells have none)."""
    names = ("best_val_loss", "best_val_ppl", "test_loss", "test_ppl", "train_time_s")
    values = {name: summary.get(name) for name in names}
    return {f"final/{name}": float(v) for name, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf")}


def _plain_config(config: dict[str, Any]) -> dict[str, Any]:
    """The config as scalars (lists as JSON text): what every tracker's hyperparameter view accepts."""
    return {k: v if isinstance(v, (str, int, float, bool)) else json.dumps(v) for k, v in config.items()}


class TensorBoardTracker:
    def __init__(self, cell: dict[str, Any], folder: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise _missing("tensorboard", "tensorboard") from None
        self.writer = SummaryWriter(log_dir=str(folder / "tensorboard" / cell["name"]), flush_secs=10)
        self.writer.add_text("config", "```\n" + json.dumps(cell["config"], indent=1, sort_keys=True) + "\n```")
        self.writer.add_text("cell_id", cell["id"])

    def bench_log_step(self, cell: dict[str, Any], step: int, metrics: dict[str, float]) -> None:
        self.writer.add_scalar("train/loss", metrics["train_loss"], step)
        self.writer.add_scalar("train/lr", metrics["lr"], step)

    def bench_evaluation(self, cell: dict[str, Any], epoch: int, step: int, metrics: dict[str, float]) -> None:
        self.writer.add_scalar("val/loss", metrics["loss"], step)
        self.writer.add_scalar("val/ppl", metrics["ppl"], step)

    def bench_run_end(self, cell: dict[str, Any], summary: dict[str, Any]) -> None:
        for name, value in _final_metrics(summary).items():
            self.writer.add_scalar(name, value, int(summary.get("step") or 0))

    def close(self, status: str) -> None:
        self.writer.close()


class WandbTracker:
    def __init__(self, cell: dict[str, Any], folder: Path):
        try:
            import wandb
        except ImportError:
            raise _missing("wandb", "wandb") from None
        folder.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(mode=os.environ.get("WANDB_MODE", "offline"), dir=str(folder), project=folder.name,
                              group=folder.name, name=cell["name"], config=_plain_config(cell["config"]),
                              tags=[cell["id"]], reinit="create_new",
                              # bench's own lines stay bench's: no console capture, no W&B banner
                              settings=wandb.Settings(console="off", silent=True))

    def bench_log_step(self, cell: dict[str, Any], step: int, metrics: dict[str, float]) -> None:
        self.run.log({"train/loss": metrics["train_loss"], "train/lr": metrics["lr"]}, step=step)

    def bench_evaluation(self, cell: dict[str, Any], epoch: int, step: int, metrics: dict[str, float]) -> None:
        # W&B steps only move forward: an evaluation at the step just logged joins that step's row.
        self.run.log({"val/loss": metrics["loss"], "val/ppl": metrics["ppl"]}, step=step)

    def bench_run_end(self, cell: dict[str, Any], summary: dict[str, Any]) -> None:
        self.run.summary.update({"status": summary.get("status"), **_final_metrics(summary)})

    def close(self, status: str) -> None:
        self.run.finish(exit_code=0 if status == "ok" else 1)


class MlflowTracker:
    def __init__(self, cell: dict[str, Any], folder: Path):
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise _missing("mlflow", "mlflow") from None
        folder.mkdir(parents=True, exist_ok=True)
        uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(folder / 'mlflow.db').resolve()}"
        self.client = MlflowClient(tracking_uri=uri)
        experiment = self.client.get_experiment_by_name(folder.name)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(folder.name)
        run = self.client.create_run(experiment_id, run_name=cell["name"],
                                     tags={"bench.cell_id": cell["id"], "bench.matrix": folder.name})
        self.run_id = run.info.run_id
        for key, value in _plain_config(cell["config"]).items():
            self.client.log_param(self.run_id, key, str(value)[:6000])

    def bench_log_step(self, cell: dict[str, Any], step: int, metrics: dict[str, float]) -> None:
        self.client.log_metric(self.run_id, "train/loss", metrics["train_loss"], step=step)
        self.client.log_metric(self.run_id, "train/lr", metrics["lr"], step=step)

    def bench_evaluation(self, cell: dict[str, Any], epoch: int, step: int, metrics: dict[str, float]) -> None:
        self.client.log_metric(self.run_id, "val/loss", metrics["loss"], step=step)
        self.client.log_metric(self.run_id, "val/ppl", metrics["ppl"], step=step)

    def bench_run_end(self, cell: dict[str, Any], summary: dict[str, Any]) -> None:
        for name, value in _final_metrics(summary).items():
            self.client.log_metric(self.run_id, name, value, step=int(summary.get("step") or 0))

    def close(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status="FINISHED" if status == "ok" else "FAILED")


@hookimpl
def bench_trackers() -> list[Component]:
    return [
        Component("tensorboard", TensorBoardTracker,
                  description="TensorBoard event files in outputs/<matrix>/tensorboard/<cell> (extra: tensorboard)"),
        Component("wandb", WandbTracker,
                  description="Weights & Biases run per cell, project/group = matrix; offline unless WANDB_MODE "
                              "(extra: wandb)"),
        Component("mlflow", MlflowTracker,
                  description="MLflow run per cell in experiment <matrix>; outputs/<matrix>/mlflow.db unless "
                              "MLFLOW_TRACKING_URI (extra: mlflow)"),
    ]
