"""A tracker observes a cell: a broken one gets one warning and is dropped, and the cell's outcome
and result are the same as without it. A misspelt tracker name stops the command at resolve time."""

from __future__ import annotations

import json

from bench.cli import main
from tests.conftest import TINY_DEFAULTS, make_distribution

BROKEN = """
from bench import Component, hookimpl

class Broken:
    def __init__(self, cell, folder):
        self.calls = 0

    def bench_log_step(self, cell, step, metrics):
        raise RuntimeError("the tracking server went away")

class WontStart:
    def __init__(self, cell, folder):
        raise ConnectionError("no route to the tracking server")

@hookimpl
def bench_trackers():
    return [Component("broken", Broken), Component("wontstart", WontStart)]
"""

MATRIX = """
name = "observed"
seeds = [0]
{defaults}
trackers = {trackers}

[matrix]
model = ["lstm"]
optimizer = ["adamw"]
"""


def _summary(outputs):
    [path] = outputs.glob("observed/*/summary.json")
    return json.loads(path.read_text())


def test_a_failing_tracker_changes_nothing_about_the_cell(write_matrix, tmp_path, plugin_site, capsys):
    make_distribution(plugin_site, "bench-broken-tracker", "broken_tracker", BROKEN)
    plain = write_matrix(MATRIX.format(defaults=TINY_DEFAULTS, trackers="[]"), name="plain")
    tracked = write_matrix(MATRIX.format(defaults=TINY_DEFAULTS, trackers='["broken", "wontstart"]'), name="tracked")
    assert main(["run", str(plain), "--outputs", str(tmp_path / "a")]) == 0
    assert main(["run", str(tracked), "--outputs", str(tmp_path / "b")]) == 0
    err = capsys.readouterr().err
    assert "tracker 'broken' failed in bench_log_step: RuntimeError: the tracking server went away" in err
    assert err.count("tracker 'broken' failed") == 1  # dropped after its first failure
    assert "tracker 'wontstart' could not start" in err and "the cell trains without it" in err
    a, b = _summary(tmp_path / "a"), _summary(tmp_path / "b")
    assert a["id"] == b["id"]  # trackers are not part of what a cell computes
    assert (a["status"], a["best_val_loss"], a["test_loss"]) == (b["status"], b["best_val_loss"], b["test_loss"])


def test_a_misspelt_tracker_is_one_line_with_a_suggestion(write_matrix, tmp_path, capsys):
    path = write_matrix(MATRIX.format(defaults=TINY_DEFAULTS, trackers='["tensorbord"]'))
    assert main(["run", str(path), "--outputs", str(tmp_path / "out"), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown tracker 'tensorbord'; did you mean 'tensorboard'?" in err[0]


def test_the_tracker_flag_adds_to_the_matrix_key(write_matrix, tmp_path, capsys):
    path = write_matrix(MATRIX.format(defaults=TINY_DEFAULTS, trackers="[]"))
    assert main(["run", str(path), "--outputs", str(tmp_path / "out"), "--dry-run", "--tracker", "nonesuch"]) == 2
    assert "unknown tracker 'nonesuch'" in capsys.readouterr().err
