"""Plugins load one by one from real installed-looking distributions (importlib.metadata entry points):
a broken one is reported and left out, the rest work; plugins can be switched off or named explicitly."""

from __future__ import annotations

import pytest

from bench import cli
from bench.registry import NO_AUTOLOAD_ENV, PluginSelection, load_plugins
from tests.conftest import TINY_DEFAULTS, make_distribution

GOOD = '''
import torch
from bench import Component, hookimpl

@hookimpl
def bench_optimizers():
    return [Component("good-sgd", lambda params, *, lr, device_type: torch.optim.SGD(params, lr=lr))]
'''

BROKEN_IMPORT = '''
import not_a_module_xyz
'''

RAISING_HOOK = '''
from bench import hookimpl

@hookimpl
def bench_models():
    raise RuntimeError("registration bug")
'''

CLASH = '''
from bench import Component, hookimpl

@hookimpl
def bench_models():
    return [Component("lstm", lambda vocab_size: None, {}, "a clash")]
'''


@pytest.fixture
def good_and_broken(plugin_site):
    make_distribution(plugin_site, "bench-good", "bench_good", GOOD)
    make_distribution(plugin_site, "bench-broken", "bench_broken", BROKEN_IMPORT)
    make_distribution(plugin_site, "bench-raising", "bench_raising", RAISING_HOOK)
    return plugin_site


def _warnings(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("bench: warning:")]


def test_a_broken_plugin_warns_naming_its_distribution_and_the_others_work(good_and_broken, capsys):
    assert cli.main(["list"]) == 0
    out, err = capsys.readouterr()
    assert "good-sgd" in out and "bench-good 0.1" in out and "lstm" in out
    warnings = _warnings(err)
    assert len(warnings) == 2, err
    (imported,) = [w for w in warnings if "bench-broken 0.1" in w]
    assert "failed to load: ModuleNotFoundError: No module named 'not_a_module_xyz'" in imported
    assert "--disable-plugin bench_broken" in imported
    (raised,) = [w for w in warnings if "bench-raising 0.1" in w]
    assert "failed in bench_models: RuntimeError: registration bug" in raised


def test_list_verbose_shows_each_plugin_module_distribution_and_status(good_and_broken, capsys):
    assert cli.main(["list", "--verbose"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.split("\nplugins\n")[1].splitlines()[2:]}
    assert rows["bench_good"].split()[1:4] == ["bench_good", "bench-good", "0.1"] and "loaded" in rows["bench_good"]
    assert "failed" in rows["bench_broken"] and "not_a_module_xyz" in rows["bench_broken"]
    assert "failed" in rows["bench_raising"] and "bench_models: RuntimeError: registration bug" in rows["bench_raising"]
    assert "bench-lm" in rows["models"] and "loaded" in rows["models"]


@pytest.mark.parametrize("how", ["before", "after", "env-distribution-name"])
def test_disabled_plugins_are_not_loaded(good_and_broken, monkeypatch, capsys, how):
    args = {"before": ["--disable-plugin", "bench_broken", "--disable-plugin", "bench_raising", "list", "-v"],
            "after": ["list", "-v", "--disable-plugin", "bench_broken", "--disable-plugin", "bench_raising"],
            "env-distribution-name": ["list", "-v"]}[how]
    if how.startswith("env"):
        monkeypatch.setenv("BENCH_DISABLE_PLUGINS", "bench-broken, bench-raising")
    assert cli.main(args) == 0
    out, err = capsys.readouterr()
    assert not _warnings(err) and "good-sgd" in out
    assert [line.split()[-1] for line in out.splitlines() if line.startswith(("bench_broken", "bench_raising"))] == [
        "disabled", "disabled"]


def test_a_disable_plugin_name_that_matches_nothing_is_one_warning(good_and_broken, capsys):
    """Issue 18: a typo in --disable-plugin was silently ignored (and the plugin stayed loaded)."""
    assert cli.main(["list", "--disable-plugin", "bench_brokn", "--disable-plugin", "bench_good"]) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "--disable-plugin 'bench_brokn'" in line]
    assert len(lines) == 1 and lines[0].startswith("bench: warning: --disable-plugin 'bench_brokn' matches no "
                                                   "installed plugin; did you mean 'bench_broken'? `bench list "
                                                   "--verbose` shows each plugin's name (bench-broken, "), lines
    assert "'bench_good'" not in err  # a name that matches is silent


def test_without_autoload_only_builtins_and_named_plugins_load(good_and_broken, monkeypatch, capsys):
    monkeypatch.setenv(NO_AUTOLOAD_ENV, "1")
    (good_and_broken / "plain_module.py").write_text(GOOD.replace("good-sgd", "plain-sgd"))
    assert cli.main(["list", "-v"]) == 0
    out, err = capsys.readouterr()
    assert not _warnings(err) and "lstm" in out and "good-sgd" not in out
    assert "not autoloaded" in next(line for line in out.splitlines() if line.startswith("bench_good"))

    assert cli.main(["--plugin", "bench_good", "list", "--plugin", "plain_module"]) == 0
    out, err = capsys.readouterr()
    assert not _warnings(err)
    assert "bench-good 0.1" in next(line for line in out.splitlines() if line.startswith("good-sgd"))
    assert "module plain_module" in next(line for line in out.splitlines() if line.startswith("plain-sgd"))


def test_a_missing_explicit_plugin_is_a_warning_too(plugin_site, capsys):
    loaded = load_plugins(PluginSelection.from_options(plugins=["no_such_plugin_module"], environ={}))
    assert loaded.registry.has("model", "lstm")
    assert ("plugin module no_such_plugin_module (--plugin no_such_plugin_module) failed to load: "
            "ModuleNotFoundError") in capsys.readouterr().err


def test_a_clashing_name_is_listed_and_fails_only_the_cells_that_use_it(plugin_site, write_matrix, capsys):
    make_distribution(plugin_site, "bench-shadow", "bench_shadow", CLASH)
    assert cli.main(["list"]) == 0
    out, err = capsys.readouterr()
    (warning,) = _warnings(err)
    assert "model 'lstm' is registered by both bench-lm" in warning and "bench-shadow 0.1" in warning
    assert sum(line.startswith("lstm ") for line in out.splitlines()) == 2

    matrix = write_matrix(TINY_DEFAULTS + '[matrix]\nmodel = ["lstm", "gpt1"]\noptimizer = ["sgd", "adam"]\n')
    assert cli.main(["run", str(matrix), "--dry-run"]) == 2
    out, err = capsys.readouterr()
    errors = err.strip().splitlines()
    assert len(errors) == 2 and all(e.startswith("bench: error: matrix 'tiny', cell ") for e in errors)
    assert all("model=lstm" in e and "bench-shadow 0.1" in e for e in errors)
    assert out.count("gpt1-") == 2 and "4 cells in matrix 'tiny', 2 of them unbuildable" in out


def test_a_registration_hook_returning_something_else_than_components_is_left_out(plugin_site, capsys):
    make_distribution(plugin_site, "bench-wrong", "bench_wrong", '''
from bench import hookimpl

@hookimpl
def bench_optimizers():
    return [{"name": "sgd2"}]
''')
    loaded = load_plugins(PluginSelection.from_options(environ={}))
    assert not loaded.registry.has("optimizer", "sgd2") and loaded.registry.has("optimizer", "sgd")
    assert ("plugin bench-wrong 0.1 failed in bench_optimizers: TypeError: bench_optimizers returned a dict; "
            "return bench.Component objects") in capsys.readouterr().err
    assert next(r for r in loaded.records if r.name == "bench_wrong").status == "failed"


@pytest.mark.parametrize("command", ["run", "estimate"])
def test_every_command_that_builds_cells_honours_the_plugin_options(good_and_broken, write_matrix, command, capsys):
    matrix = write_matrix(TINY_DEFAULTS + '[matrix]\nmodel = ["lstm"]\noptimizer = ["good-sgd"]\n')
    assert cli.main(["--disable-plugin", "bench_good", command, str(matrix)]) == 2
    assert cli.main([command, str(matrix), "--disable-plugin", "bench_good"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("bench: error:")]
    assert len(errors) == 2 and all("unknown optimizer 'good-sgd'" in line for line in errors)
