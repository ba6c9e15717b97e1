"""A schedule-free optimizer under a decaying schedule gets one warning naming the fix, never an error."""

from __future__ import annotations

import pytest

from bench import cli
from bench.registry import PluginSelection, load_plugins
from bench.schedule_free import schedule_free_problem
from tests.conftest import TINY_DEFAULTS


@pytest.fixture(scope="module")
def registry():
    return load_plugins(PluginSelection(autoload=False)).registry


@pytest.mark.parametrize("schedule", ["cosine", "linear", "wsd"])
def test_schedule_free_under_a_decaying_schedule_is_named_with_the_fix(registry, schedule):
    problem = schedule_free_problem({"optimizer": "schedulefree-adamw", "schedule": schedule}, registry)
    assert problem == (f"optimizer 'schedulefree-adamw' is schedule-free, but schedule {schedule!r} decays the "
                       "learning rate as well (the method runs at a constant rate); set schedule = \"constant\" "
                       "(with warmup_steps for a warmup)")


@pytest.mark.parametrize("optimizer, schedule", [("schedulefree-adamw", "constant"), ("adamw", "cosine"),
                                                 ("ademamix", "wsd")])
def test_other_pairings_are_fine(registry, optimizer, schedule):
    assert schedule_free_problem({"optimizer": optimizer, "schedule": schedule}, registry) is None


def _matrix(write_matrix):
    body = (TINY_DEFAULTS.replace("epochs = 2", "epochs = 1").replace("steps_per_epoch = 10", "steps_per_epoch = 2")
            + 'model = "lstm"\n[matrix]\noptimizer = ["schedulefree-adamw"]\nschedule = ["cosine", "constant"]\n')
    return str(write_matrix(body, name="sf"))


def test_dry_run_warns_once_per_pairing_and_still_succeeds(write_matrix, tmp_path, capsys):
    assert cli.main(["run", _matrix(write_matrix), "--dry-run", "--outputs", str(tmp_path)]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "schedule-free" in line]
    assert warnings == ["bench: warning: 1 cell (lstm-L1-schedulefree-adamw-schedule=cosine): optimizer "
                        "'schedulefree-adamw' is schedule-free, but schedule 'cosine' decays the learning rate as "
                        "well (the method runs at a constant rate); set schedule = \"constant\" (with warmup_steps "
                        "for a warmup)"]


def test_run_warns_when_the_cell_starts_and_trains_it(write_matrix, tmp_path, capsys):
    assert cli.main(["run", _matrix(write_matrix), "--device", "cpu", "--outputs", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    warned = [line for line in err.splitlines() if "schedule-free" in line]
    assert len(warned) == 1 and "lstm-L1-schedulefree-adamw-schedule=cosine: warning: optimizer" in warned[0]
    assert "2 trained" in err
