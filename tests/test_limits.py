"""Sizes no run can reach are refused with one line before anything is built (issue 18)."""

from __future__ import annotations

import pytest
import torch

from bench import matrix as matrix_module
from bench.cli import main
from bench.errors import ConfigError
from bench.limits import MAX_CELLS, TooManyModules, check_cell_count, device_bytes, fit_problem, module_limit
from tests.conftest import TINY_DEFAULTS

ONE_CELL = 'model = "lstm"\noptimizer = "sgd"\nn_layer = 1\n'
HUGE = {
    "batch-size-1e9": (TINY_DEFAULTS.replace("batch_size = 8", "batch_size = 1000000000") + ONE_CELL,
                       "lstm-L1-sgd: training needs about"),
    "n-layer-1e9-lstm": (TINY_DEFAULTS + ONE_CELL.replace("n_layer = 1", "n_layer = 1000000000"),
                         "the model has more than 20,000 submodules and parameter tensors; check n_layer"),
    "n-layer-1e9-gpt1": (TINY_DEFAULTS + ONE_CELL.replace("lstm", "gpt1").replace("= 1\n", "= 1000000000\n"),
                         "the model has more than 20,000 submodules and parameter tensors; check n_layer"),
    "steps-per-epoch-1e18": (TINY_DEFAULTS.replace("steps_per_epoch = 10", "steps_per_epoch = 1000000000000000000")
                             + ONE_CELL, "the cell plans 2e+18 optimizer steps, over the limit of 1e+12"),
    "seed-1e20": (TINY_DEFAULTS + ONE_CELL + "seed = 100000000000000000000\n",
                  "seed 100000000000000000000 is outside what torch.manual_seed accepts"),
    "seeds-1e20": ("seeds = [100000000000000000000]\n" + TINY_DEFAULTS + ONE_CELL,
                   "seed 100000000000000000000 is outside what torch.manual_seed accepts"),
    "seeds-20000": (f"seeds = {list(range(20000))}\n" + TINY_DEFAULTS + ONE_CELL,
                    "the matrix expands to up to 20,000 cells (20000 seeds), over the limit of 1,000; shrink it, "
                    "or add max_cells = 20000 at its top if you mean it"),
    "grid-10000": (TINY_DEFAULTS + ONE_CELL + f"[matrix]\nlr = {[i / 1e4 for i in range(1, 101)]}\n"
                   f"batch_size = {list(range(1, 101))}\n", "expands to up to 10,000 cells (100 lr x 100 batch_size"),
    "sweep-batch-size-1e9": (TINY_DEFAULTS.replace("batch_size = 8", "batch_size = 1000000000") + ONE_CELL
                             + '[sweep]\nstrategy = "random"\ntrials = 2\n[sweep.space]\n'
                             'lr = { loguniform = [1e-3, 1e-1] }\n', "sweep cell lstm/sgd: training needs about"),
    "grid-1e8": (TINY_DEFAULTS + ONE_CELL + "[matrix]\n" + "".join(f"k{i} = {list(range(10))}\n" for i in range(8)),
                 "expands to up to 100,000,000 cells"),
}


@pytest.mark.parametrize("case", HUGE)
def test_absurd_sizes_are_one_line_exit_two_before_anything_is_built(case, write_matrix, tmp_path, capsys,
                                                                     monkeypatch):
    def no_grid(*args):
        raise AssertionError("the grid was materialised")

    if case.startswith(("grid", "seeds-2")):
        monkeypatch.setattr(matrix_module, "expand_grid", no_grid)
    assert main(["run", str(write_matrix(HUGE[case][0])), "--outputs", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("bench: error:") and HUGE[case][1] in err, err
    assert not (tmp_path / "out").exists()


def test_max_cells_confirms_a_larger_grid():
    axes = {"lr": list(range(40)), "batch_size": list(range(30))}
    with pytest.raises(ConfigError, match="1,200 cells"):
        check_cell_count(axes, [], [0], None, "m")
    check_cell_count(axes, [], [0], 1200, "m")
    assert MAX_CELLS == 1000  # the documented default
    with pytest.raises(ConfigError, match="max_cells must be a positive integer"):
        check_cell_count(axes, [], [0], "many", "m")


def test_the_memory_refusal_is_only_for_what_surely_cannot_fit():
    cpu = torch.device("cpu")
    parts = {"weights": 10, "gradients": 10, "optimizer_state": 20, "activations": 100}
    assert fit_problem({**parts, "total": 140}, 100, cpu) is None  # the activation term may be 4x too high
    assert "but the cpu device has" in fit_problem({**parts, "activations": 400, "total": 440}, 100, cpu)
    assert fit_problem({**parts, "weights": 60, "gradients": 60, "activations": 0, "total": 140}, 100, cpu)
    assert device_bytes(cpu) is None or device_bytes(cpu) > 2**28


def test_module_limit_stops_a_build_and_removes_its_hooks():
    with pytest.raises(TooManyModules), module_limit(50):
        torch.nn.ModuleList([torch.nn.Linear(2, 2) for _ in range(100)])
    torch.nn.ModuleList([torch.nn.Linear(2, 2) for _ in range(100)])  # no hook left behind
