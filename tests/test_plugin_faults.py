"""`bench run` with faulty plugins installed: a name two plugins register, a factory that raises and a
logger whose hooks raise each cost at most the cells they touch, never a result, never the matrix."""

from __future__ import annotations

import json

from bench import cli
from bench.store import ResultStore
from tests.conftest import TINY_DEFAULTS, make_distribution

SHADOW = '''
from bench import Component, hookimpl

@hookimpl
def bench_models():
    return [Component("lstm", lambda vocab_size: None, {}, "a clash")]
'''

EXPLODING = '''
from bench import Component, hookimpl

def exploding(vocab_size, n_embd):
    raise KeyError("weights table")

@hookimpl
def bench_models():
    return [Component("exploding", exploding, {"n_embd": 16})]
'''

LOGGER = '''
from bench import hookimpl

@hookimpl
def bench_log_step(step):
    raise OSError("tracking server unreachable")

@hookimpl
def bench_run_end(summary):
    raise RuntimeError("upload failed")
'''

MATRIX = TINY_DEFAULTS + """
optimizer = "adam"
lr = 0.01
[matrix]
model = ["lstm", "exploding", "gpt1"]
"""


def test_faulty_plugins_fail_only_their_cells_and_loggers_change_nothing(plugin_site, write_matrix, tmp_path,
                                                                          capsys):
    make_distribution(plugin_site, "bench-shadow", "bench_shadow", SHADOW)
    make_distribution(plugin_site, "bench-exploding", "bench_exploding", EXPLODING, version="3.0")
    make_distribution(plugin_site, "bench-flaky-logger", "bench_flaky_logger", LOGGER)
    outputs = tmp_path / "outputs"
    path = write_matrix(MATRIX, name="faults")
    # --dry-run names every cell a plugin cannot build, all at once, and still shows the others.
    assert cli.main(["run", str(path), "--dry-run", "--outputs", str(outputs)]) == 2
    out, err = capsys.readouterr()
    errors = [line for line in err.splitlines() if line.startswith("bench: error:")]
    assert len(errors) == 2 and "model=lstm" in errors[0] and "KeyError: 'weights table'" in errors[1]
    assert "gpt1-L" in out and not outputs.exists()

    assert cli.main(["run", str(path), "--device", "cpu", "--outputs", str(outputs)]) == 1
    err = capsys.readouterr().err

    summaries = {s["config"]["model"]: s for s in ResultStore(outputs, "faults").summaries()}
    assert {model: s["status"] for model, s in summaries.items()} == {"lstm": "error", "exploding": "error",
                                                                      "gpt1": "ok"}
    assert "registered by both bench-lm 0.1.0 and bench-shadow 0.1" in summaries["lstm"]["reason"]
    assert ("model 'exploding' from bench-exploding 3.0 failed to build: KeyError: 'weights table'"
            in summaries["exploding"]["reason"])
    # The logger failed at every logged step and at the end: one warning, and gpt1 kept its result.
    logger_warnings = [line for line in err.splitlines() if "bench-flaky-logger 0.1" in line]
    assert len(logger_warnings) == 1 and "failed in bench_log_step: OSError" in logger_warnings[0]
    assert summaries["gpt1"]["best_val_ppl"] < 16
    assert "2 failed" in err and "1 trained" in err

    # A rerun skips the finished cell even though the logger fails again at its end.
    assert cli.main(["run", str(path), "--device", "cpu", "--outputs", str(outputs), "--filter", "model=gpt1"]) == 0
    assert "already complete" in capsys.readouterr().err
    record = ResultStore(outputs, "faults").cell(summaries["gpt1"]["id"])
    assert json.loads((record.path / "summary.json").read_text())["status"] == "ok"


def test_a_dataset_plugin_that_raises_fails_only_the_cells_that_use_it(plugin_site, write_matrix, tmp_path, capsys):
    make_distribution(plugin_site, "bench-bad-data", "bench_bad_data", '''
from bench import Component, hookimpl

def corpus():
    raise OSError("mirror unreachable")

@hookimpl
def bench_datasets():
    return [Component("bad-data", corpus, {}, tags={"tokens"})]
''', version="0.3")
    path = write_matrix(TINY_DEFAULTS + 'model = "lstm"\noptimizer = "adam"\nlr = 0.01\nmax_steps = 4\n'
                        '[matrix]\ndataset = ["bad-data", "synthetic"]\n', name="data")
    outputs = tmp_path / "outputs"
    assert cli.main(["run", str(path), "--device", "cpu", "--outputs", str(outputs)]) == 1
    err = capsys.readouterr().err
    reason = ("dataset 'bad-data' from bench-bad-data 0.3 failed to load: OSError: mirror unreachable; "
              "fix or turn off the plugin (--disable-plugin NAME)")
    assert reason in err and "1 trained" in err and "1 failed" in err
    summaries = {s["config"]["dataset"]: s for s in ResultStore(outputs, "data").summaries()}
    assert summaries["bad-data"]["status"] == "error" and summaries["bad-data"]["reason"] == reason
    assert summaries["synthetic"]["status"] == "ok"
