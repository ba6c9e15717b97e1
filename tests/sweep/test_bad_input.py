"""Bad sweep input: one clear line, exit 2, nothing written."""

import pytest

from bench.cli import main

BASE = """
[defaults]
dataset = "synthetic"
vocab_size = 16
seq_len = 16
max_steps = 4
n_embd = 16
n_head = 2
n_positions = 32
model = "gpt1"
optimizer = "adam"
"""


@pytest.mark.parametrize("sweep, message", [
    ('strategy = "random"\ntrials = 2\n[sweep.space]\nlearning_rate = { loguniform = [1e-4, 1e-1] }',
     "sweep.space searches unknown key 'learning_rate'"),
    ('strategy = "random"\ntrials = 2\n[sweep.space]\nlr = { uniform = [0.1, 0.01] }', "is empty"),
    ('strategy = "random"\ntrials = 2\n[sweep.space]\nlr = { loguniform = [0, 0.1] }', "bounds > 0"),
    ('strategy = "random"\ntrials = 2\nper = ["colour"]\n[sweep.space]\nlr = { loguniform = [1e-4, 1e-1] }',
     "sweep.per names 'colour', which no cell has"),
    ('strategy = "random"\ntrials = 2\n[sweep.space]\nn_head = { int = [3, 3] }', "is empty"),
    ('strategy = "random"\ntrials = 2\n[sweep.space]\nn_head = { choice = [3, 4] }', "n_head"),
    ('strategy = "random"\n[sweep.space]\nlr = { loguniform = [1e-4, 1e-1] }', "needs a budget"),
    ('strategy = "random"\ntrials = 2\nbatch = 0\n[sweep.space]\nlr = { loguniform = [1e-4, 1e-1] }',
     "sweep.batch = 0 is impossible; it must be an integer >= 1"),
])
def test_bad_sweep_is_one_line_exit_2_nothing_written(write_matrix, tmp_path, capsys, sweep, message):
    path = write_matrix(BASE + "[sweep]\n" + sweep, name="bad")
    outputs = tmp_path / "out"
    assert main(["run", str(path), "--outputs", str(outputs)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bench: error: ") and err.count("\n") == 1
    assert message in err
    assert not outputs.exists()


def test_dry_run_describes_the_sweep(write_matrix, tmp_path, capsys):
    path = write_matrix(BASE + '[sweep]\nstrategy = "hyperband"\nmax_resource = 9\neta = 3\nresource_steps = 2\n'
                               '[sweep.space]\nlr = { loguniform = [1e-4, 1e-1] }', name="hb")
    assert main(["run", str(path), "--dry-run", "--outputs", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "9 x 1" in out and "3 x 3" in out and "1 x 9" in out and "nothing trained" in out
    assert "each rung's trials are one batch" in out
    assert not (tmp_path / "out").exists()


def test_budget_that_leaves_zero_steps(write_matrix, tmp_path, capsys):
    path = write_matrix(BASE.replace("max_steps = 4", "max_flops = 1000.0") +
                        '[sweep]\nstrategy = "random"\ntrials = 2\n[sweep.space]\nlr = { loguniform = [1e-4, 1e-1] }',
                        name="zero")
    assert main(["run", str(path), "--outputs", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "max_flops" in err and "less than one step" in err
    assert not (tmp_path / "out").exists()
