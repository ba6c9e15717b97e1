"""Each cell records which distribution and version provided its components; an upgraded plugin makes
its old results stale, so `bench run` trains them again; `bench report` shows the versions."""

from __future__ import annotations

import importlib.metadata as metadata
import json

import torch

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
    assert ("stored result came from other plugin or library versions (optimizer 'plain-sgd': bench-plain-sgd 1.0 -> "
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


def test_a_retrain_that_fails_keeps_the_earlier_result_until_a_new_one_settles(plugin_site, write_matrix, tmp_path,
                                                                                monkeypatch, capsys):
    make_distribution(plugin_site, "bench-plain-sgd", "bench_plain_sgd", OPTIMIZER, version="1.0")
    outputs = tmp_path / "outputs"
    path = write_matrix(TINY_DEFAULTS.replace("epochs = 2", "epochs = 1") + 'model = "lstm"\noptimizer = "plain-sgd"\n',
                        name="prov")
    run = ["run", str(path), "--device", "cpu", "--outputs", str(outputs)]
    assert cli.main(run) == 0
    (record,) = ResultStore(outputs, "prov").records()
    first = {name: (record.path / name).read_bytes() for name in ("summary.json", "metrics.jsonl", "best.pt")}

    make_distribution(plugin_site, "bench-plain-sgd", "bench_plain_sgd", OPTIMIZER, version="1.1")

    def broken(self, closure=None):
        raise RuntimeError("step is broken in 1.1")

    capsys.readouterr()
    with monkeypatch.context() as patch:
        patch.setattr(torch.optim.SGD, "step", broken)  # the fault: version 1.1 cannot train
        assert cli.main(run) == 1
    store = ResultStore(outputs, "prov")
    aside = store.superseded(record.path.name)
    assert f"its earlier result is kept in {aside}" in capsys.readouterr().err
    assert {name: (aside / name).read_bytes() for name in first} == first  # not a byte lost
    assert record.read_summary()["status"] == "error" and [r.path for r in store.records()] == [record.path]

    make_distribution(plugin_site, "bench-plain-sgd", "bench_plain_sgd", OPTIMIZER, version="1.2")
    assert cli.main(run) == 0
    assert record.read_summary()["status"] == "ok" and not aside.exists()  # a new settled result replaces it


def test_force_sets_the_result_aside_and_drops_it_once_the_retrain_settles(write_matrix, tmp_path, capsys):
    outputs = tmp_path / "outputs"
    path = write_matrix(TINY_DEFAULTS.replace("epochs = 2", "epochs = 1") + 'model = "lstm"\noptimizer = "sgd"\n',
                        name="force")
    run = ["run", str(path), "--device", "cpu", "--outputs", str(outputs)]
    assert cli.main(run) == 0
    assert cli.main([*run, "--force"]) == 0
    store = ResultStore(outputs, "force")
    (record,) = store.records()
    assert record.read_summary()["status"] == "ok"
    assert not store.superseded(record.path.name).exists()


def test_a_result_set_aside_for_a_cell_that_never_started_comes_back(write_matrix, tmp_path):
    from bench.cells import resolve_cells
    from bench.matrix import load_matrix
    from bench.registry import build_registry, plugin_manager
    from bench.runner import run_cells

    class StoppedAlready:
        requested, cause = True, "SIGTERM"

    outputs = tmp_path / "outputs"
    path = write_matrix(TINY_DEFAULTS.replace("epochs = 2", "epochs = 1") + 'model = "lstm"\noptimizer = "sgd"\n',
                        name="stop")
    assert cli.main(["run", str(path), "--device", "cpu", "--outputs", str(outputs)]) == 0
    store = ResultStore(outputs, "stop")
    (record,) = store.records()
    before = {p.name: p.read_bytes() for p in record.path.iterdir() if p.is_file()}
    manager = plugin_manager()
    registry = build_registry(manager)
    outcome = run_cells(resolve_cells(load_matrix(path), registry), registry=registry, hooks=manager.hook,
                        store=store, device=torch.device("cpu"), force=True, stop=StoppedAlready())
    assert outcome.interrupted == "SIGTERM" and not outcome.results
    assert {p.name: p.read_bytes() for p in record.path.iterdir() if p.is_file()} == before
    assert not store.superseded(record.path.name).exists()


# -- libraries a component wraps (Component.depends_on) ----------------------------------------

WRAPPING = '''
import torch
from bench import Component, hookimpl

@hookimpl
def bench_optimizers():
    return [Component("wrapped-sgd", lambda params, *, lr, device_type: torch.optim.SGD(params, lr=lr),
                      {"lr": 0.05}, depends_on=("fake-sgd-lib",))]
'''


def _with_library(version, library_version):
    provenance = _component("p", version)
    if library_version is not None:
        provenance["components"]["optimizer"]["depends_on"] = {"lib": library_version}
    return provenance


def test_a_changed_library_is_stale_and_one_recorded_on_one_side_only_is_not():
    assert stale_reason(_with_library("1.0", "2.0"), _with_library("1.0", "2.0")) is None
    assert (stale_reason(_with_library("1.0", "2.0"), _with_library("1.0", "2.1"))
            == "optimizer 'x': p 1.0 with lib 2.0 -> p 1.0 with lib 2.1")
    # The plugin no longer declares it: a plugin change, which its own version says.
    assert stale_reason(_with_library("1.0", "2.0"), _with_library("1.0", None)) is None
    # Stored before bench recorded libraries: which version computed it is unknown, so it is kept.
    assert stale_reason(_with_library("1.0", None), _with_library("1.0", "2.1")) is None
    assert (stale_reason(_with_library("1.0", None), _with_library("1.1", "2.1"))
            == "optimizer 'x': p 1.0 -> p 1.1 with lib 2.1")


def _library(site, name, version):
    """An installed distribution that is no plugin (no entry points), like a library a plugin wraps."""
    for old in site.glob(f"{name.replace('-', '_')}-*.dist-info"):
        for path in old.iterdir():
            path.unlink()
        old.rmdir()
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


def test_an_upgraded_library_retrains_the_cells_it_computed(plugin_site, write_matrix, tmp_path, capsys):
    make_distribution(plugin_site, "bench-wrapped-sgd", "bench_wrapped_sgd", WRAPPING, version="1.0")
    _library(plugin_site, "fake-sgd-lib", "2.0")
    outputs = tmp_path / "outputs"
    body = TINY_DEFAULTS.replace("epochs = 2", "epochs = 1") + 'model = "lstm"\noptimizer = "wrapped-sgd"\n'
    path = write_matrix(body, name="lib")
    run = ["run", str(path), "--device", "cpu", "--outputs", str(outputs)]
    assert cli.main(run) == 0
    (record,) = ResultStore(outputs, "lib").records()
    assert record.read_summary()["provenance"]["components"]["optimizer"]["depends_on"] == {"fake-sgd-lib": "2.0"}
    capsys.readouterr()
    assert cli.main(run) == 0
    assert "already complete, skipped" in capsys.readouterr().err

    _library(plugin_site, "fake-sgd-lib", "2.1")  # the plugin's own version stays 1.0
    assert cli.main(run) == 0
    err = capsys.readouterr().err
    assert ("stored result came from other plugin or library versions (optimizer 'wrapped-sgd': bench-wrapped-sgd "
            "1.0 with fake-sgd-lib 2.0 -> bench-wrapped-sgd 1.0 with fake-sgd-lib 2.1); training again") in err
    assert "1 trained, 0 already complete" in err
    assert cli.main(["report", "--outputs", str(outputs), "--tables", "versions", "--format", "csv"]) == 0
    assert "bench-wrapped-sgd 1.0 with fake-sgd-lib 2.1" in capsys.readouterr().out


def test_a_library_optimizer_cell_is_stale_when_its_recorded_library_version_differs(write_matrix, tmp_path, capsys):
    # The real plugin: a cell trained with AdEMAMix, then the stored pytorch-optimizer version edited
    # (what an upgrade since would leave behind).
    outputs = tmp_path / "outputs"
    body = (TINY_DEFAULTS.replace("epochs = 2", "epochs = 1").replace("steps_per_epoch = 10", "steps_per_epoch = 2")
            + 'model = "lstm"\noptimizer = "ademamix"\n')
    run = ["run", str(write_matrix(body, name="ademamix")), "--device", "cpu", "--outputs", str(outputs)]
    assert cli.main(run) == 0
    (record,) = ResultStore(outputs, "ademamix").records()
    summary = json.loads((record.path / "summary.json").read_text())
    optimizer = summary["provenance"]["components"]["optimizer"]
    installed = optimizer["depends_on"]["pytorch-optimizer"]
    assert installed == metadata.version("pytorch-optimizer")
    optimizer["depends_on"]["pytorch-optimizer"] = "0.0.1"
    (record.path / "summary.json").write_text(json.dumps(summary))
    capsys.readouterr()
    assert cli.main(run) == 0
    assert (f"optimizer 'ademamix': bench-lm {optimizer['version']} with pytorch-optimizer 0.0.1 -> bench-lm "
            f"{optimizer['version']} with pytorch-optimizer {installed}); training again") in capsys.readouterr().err


def test_old_provenance_without_libraries_keeps_a_library_optimizer_cell(write_matrix, tmp_path, capsys):
    outputs = tmp_path / "outputs"
    body = (TINY_DEFAULTS.replace("epochs = 2", "epochs = 1").replace("steps_per_epoch = 10", "steps_per_epoch = 2")
            + 'model = "lstm"\noptimizer = "lion"\n')
    run = ["run", str(write_matrix(body, name="old")), "--device", "cpu", "--outputs", str(outputs)]
    assert cli.main(run) == 0
    (record,) = ResultStore(outputs, "old").records()
    summary = json.loads((record.path / "summary.json").read_text())
    del summary["provenance"]["components"]["optimizer"]["depends_on"]  # as bench stored it before
    (record.path / "summary.json").write_text(json.dumps(summary))
    capsys.readouterr()
    assert cli.main(run) == 0
    assert "already complete, skipped" in capsys.readouterr().err


def test_a_library_that_is_not_installed_is_recorded_as_such():
    from bench import Component, hookimpl
    from bench.provenance import component_label
    from bench.registry import PluginSelection, load_plugins

    component = Component("c", lambda: None, depends_on="no-such-distribution-xyz")
    assert component.depends_on == ("no-such-distribution-xyz",)  # one name, not its letters

    class Plugin:
        @hookimpl
        def bench_optimizers(self):
            return [component]

    registry = load_plugins(PluginSelection(autoload=False), extra_plugins=[Plugin()]).registry
    entry = registry.entry("optimizer", "c")
    assert entry.libraries == (("no-such-distribution-xyz", None),)
    assert component_label({"distribution": "p", "version": "1.0", "depends_on": dict(entry.libraries)}) == (
        "p 1.0 with no-such-distribution-xyz not installed")
