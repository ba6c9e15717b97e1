"""Each cell records which distribution and version provided its components; an upgraded plugin makes
its old results stale, so `bench run` trains them again; `bench report` shows the versions."""

from __future__ import annotations

import json

from bench import cli
from bench.provenance import stale_reason
from bench.store import ResultStore
from tests.conftest import TINY_DEFAULTS, make_distribution

OPTIMIZER = '''
import torch
from bench import Component, hookimpl

@hookimpl
def bench_optimizers():
    return [Component("plain-sgd", lambda params, *, lr, device_type: torch.optim.SGD(params, lr=lr),
                      {"lr": 0.05})]
'''


def _component(distribution, version, name="x"):
    return {"components": {"optimizer": {"name": name, "distribution": distribution, "version": version,
                                         "module": "m"}}}


def test_a_changed_distribution_or_version_is_stale_and_a_missing_record_is_not():
    assert stale_reason(_component("p", "1.0"), _component("p", "1.0")) is None
    assert stale_reason(_component("p", "1.0"), _component("p", "1.1")) == "optimizer 'x': p 1.0 -> p 1.1"
    assert stale_reason(_component("p", "1.0"), _component("q", "1.0")) == "optimizer 'x': p 1.0 -> q 1.0"
    assert stale_reason({}, _component("p", "1.0")) is None  # stored before provenance existed: kept


def test_an_upgraded_plugin_retrains_its_cells_and_the_report_shows_versions(plugin_site, write_matrix, tmp_path,
                                                                              capsys):
    make_distribution(plugin_site, "bench-plain-sgd", "bench_plain_sgd", OPTIMIZER, version="1.0")
    outputs = tmp_path / "outputs"
    body = TINY_DEFAULTS.replace("epochs = 2", "epochs = 1") + 'model = "lstm"\noptimizer = "plain-sgd"\n'
    path = write_matrix(body, name="prov")
    run = ["run", str(path), "--device", "cpu", "--outputs", str(outputs)]
    assert cli.main(run) == 0
    (record,) = ResultStore(outputs, "prov").records()
    config = json.loads((record.path / "config.json").read_text())
    summary = record.read_summary()
    assert config["provenance"] == summary["provenance"]
    assert config["config"]["lr"] == 0.05  # the optimizer's own default lr
    components = summary["provenance"]["components"]
    assert components["optimizer"] == {"name": "plain-sgd", "distribution": "bench-plain-sgd", "version": "1.0",
                                       "module": "bench_plain_sgd"}
    assert components["model"]["distribution"] == "bench-lm" and summary["provenance"]["bench"] == "0.1.0"
    capsys.readouterr()

    assert cli.main(run) == 0
    assert "already complete, skipped" in capsys.readouterr().err

    make_distribution(plugin_site, "bench-plain-sgd", "bench_plain_sgd", OPTIMIZER, version="1.1")
    assert cli.main(run) == 0
    err = capsys.readouterr().err
    assert ("stored result came from other plugin versions (optimizer 'plain-sgd': bench-plain-sgd 1.0 -> "
            "bench-plain-sgd 1.1); training again") in err
    assert "1 trained, 0 already complete" in err
    (again,) = ResultStore(outputs, "prov").records()
    assert again.path == record.path  # same cell id: versions are not part of it
    assert again.read_summary()["provenance"]["components"]["optimizer"]["version"] == "1.1"

    assert cli.main(["report", "--outputs", str(outputs), "--tables", "versions", "--format", "csv"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    header, row = lines[lines.index(next(line for line in lines if line.startswith("Cell,"))):][:2]
    assert header.split(",")[:6] == ["Cell", "Cell id", "Model", "Optimizer", "Dataset", "Schedule"]
    assert "bench-plain-sgd 1.1" in row and "bench-lm 0.1.0" in row
