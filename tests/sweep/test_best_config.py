"""`bench report --best-config`: a short file (only keys that differ from the defaults), the sweep's
cell names, and `bench run` on it reusing the cells the sweep trained. Real sweeps on tiny cells."""

import json
import textwrap
import tomllib
from pathlib import Path

import pytest

from bench.cells import declared_defaults, resolve_cells
from bench.cli import main
from bench.matrix import load_matrix
from bench.registry import load_plugins
from tests.conftest import TINY_SWEEP_CELL, sweep_studies

TINY = TINY_SWEEP_CELL + """max_steps = 6
n_hidden = 16
n_layer = 2
log_every = 3
memory_interval_ms = 0
model = "gpt1"
optimizer = "adam"
"""


def final_cells(outputs: Path, name: str) -> list[str]:
    return [c for s in sweep_studies(outputs, name).values() for c in s.user_attrs.get("final_cells", [])]


def trial_cells(outputs: Path, name: str) -> list[str]:
    return [t.user_attrs["cell_id"] for s in sweep_studies(outputs, name).values() for t in s.trials]


def stored(outputs: Path, name: str, cell: str) -> dict:
    return json.loads((outputs / name / cell / "config.json").read_text())


def sweep_and_best(root: Path, name: str, sweep: str) -> tuple[Path, Path]:
    """Run a tiny sweep in-process, then `bench report --best-config`; (outputs, best.toml)."""
    path = root / f"{name}.toml"
    path.write_text(TINY + textwrap.dedent(sweep))
    outputs, best = root / "out", root / "best.toml"
    assert main(["run", str(path), "--outputs", str(outputs)]) == 0
    assert main(["report", "--outputs", str(outputs), "--matrix", name, "--best-config", str(best)]) == 0
    return outputs, best


@pytest.fixture(scope="module")
def fair(tmp_path_factory):
    """Two groups (sgd, adamw), two random trials each, the best of each over final seeds 1 and 2."""
    root = tmp_path_factory.mktemp("fair")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BENCH_CACHE_DIR", str(root / "cache"))
        return sweep_and_best(root, "fair", """
            [matrix]
            optimizer = ["sgd", "adamw"]
            [sweep]
            strategy = "random"
            trials = 2
            per = ["optimizer"]
            final_seeds = 2
            [sweep.space]
            lr = { loguniform = [1e-3, 1e-1] }
            """)


def test_writes_only_keys_that_differ_from_the_defaults(fair):
    outputs, best = fair
    raw = tomllib.loads(best.read_text())
    registry = load_plugins().registry
    for entry in raw["matrix"]["include"]:
        cell = {k: v for k, v in {**raw["defaults"], **entry}.items() if k != "name"}
        defaults = declared_defaults(cell, registry)
        same = [k for k, v in cell.items() if k in defaults and json.dumps(v) == json.dumps(defaults[k])]
        assert same == [], f"{entry['optimizer']}: keys written at their default value: {same}"
    # The sweep's cells hold every key (dropout, adamw's betas and weight_decay...); the file only these.
    assert sorted(raw["defaults"]) == ["batch_size", "log_every", "lr", "max_steps", "memory_interval_ms", "model",
                                       "n_embd", "n_head", "n_layer", "n_positions", "seq_len", "test_tokens",
                                       "train_tokens", "valid_tokens", "vocab_size"]
    assert [sorted(e) for e in raw["matrix"]["include"]] == [["name", "optimizer"]] * 2
    # ... and still resolves to exactly the configs the sweep trained, so to the same ids.
    cells = resolve_cells(load_matrix(best), registry)
    assert sorted(c.id for c in cells) == sorted(final_cells(outputs, "fair"))
    for cell in cells:
        assert cell.config == stored(outputs, "fair", cell.id)["config"]


def test_keeps_the_sweeps_cell_names(fair):
    outputs, best = fair
    cells = resolve_cells(load_matrix(best), load_plugins().registry)
    names = {c.id: c.name for c in cells}
    assert names == {cell: stored(outputs, "fair", cell)["name"] for cell in final_cells(outputs, "fair")}
    assert sorted(names.values())[0].startswith("gpt1-adamw-lr=") and sorted(names.values())[0].endswith("-seed1")


def test_dry_run_of_the_file_lists_the_same_ids(fair, capsys):
    _, best = fair
    capsys.readouterr()
    assert main(["run", str(best), "--dry-run"]) == 0
    listed = capsys.readouterr().out
    ids = [line.split()[0] for line in listed.splitlines()[2:] if line and not line.startswith("4 cells")]
    assert sorted(ids) == sorted(c.id for c in resolve_cells(load_matrix(best), load_plugins().registry))
    assert "4 cells in matrix 'fair'" in listed


def test_bench_run_reuses_the_sweeps_cells(fair, capsys):
    outputs, best = fair
    before = {p: p.stat().st_mtime_ns for p in (outputs / "fair").glob("*/summary.json")}
    capsys.readouterr()
    assert main(["run", str(best), "--outputs", str(outputs)]) == 0
    err = capsys.readouterr().err
    assert "0 trained, 4 already complete, 0 failed" in err
    after = {p: p.stat().st_mtime_ns for p in (outputs / "fair").glob("*/summary.json")}
    assert after == before  # no cell written, none added
    assert sorted(p.name for p in outputs.iterdir()) == ["fair"]  # no second store: no result counted twice


def test_without_final_seeds_the_file_is_the_best_trial(tmp_path, capsys):
    outputs, best = sweep_and_best(tmp_path, "solo", """
        [sweep]
        strategy = "random"
        trials = 2
        [sweep.space]
        lr = { loguniform = [1e-3, 1e-1] }
        """)
    raw = tomllib.loads(best.read_text())
    assert raw["name"] == "solo" and raw["seeds"] == [0]  # the trials' seed
    cells = resolve_cells(load_matrix(best), load_plugins().registry)
    assert len(cells) == 1 and cells[0].id in trial_cells(outputs, "solo")
    assert cells[0].name == stored(outputs, "solo", cells[0].id)["name"]  # e.g. gpt1-adam-lr=0.0125
    capsys.readouterr()
    assert main(["run", str(best), "--outputs", str(outputs)]) == 0
    assert "0 trained, 1 already complete, 0 failed" in capsys.readouterr().err


def test_final_overrides_are_part_of_the_best_configuration(tmp_path, capsys):
    outputs, best = sweep_and_best(tmp_path, "longer", """
        [sweep]
        strategy = "random"
        trials = 1
        final_seeds = 1
        final_overrides = { max_steps = 9 }
        [sweep.space]
        lr = { loguniform = [1e-3, 1e-1] }
        """)
    raw = tomllib.loads(best.read_text())
    assert raw["defaults"]["max_steps"] == 9 and raw["seeds"] == [1]
    cells = resolve_cells(load_matrix(best), load_plugins().registry)
    assert [c.id for c in cells] == final_cells(outputs, "longer")
    assert cells[0].name.endswith("-final-seed1") and cells[0].name == stored(outputs, "longer", cells[0].id)["name"]
    capsys.readouterr()
    assert main(["run", str(best), "--outputs", str(outputs)]) == 0
    assert "0 trained, 1 already complete, 0 failed" in capsys.readouterr().err


def test_a_cell_the_sweep_did_not_finish_trains_into_its_store(fair, tmp_path, capsys):
    """Another seed than the sweep's: trained once, in the sweep's store, then reused like the others."""
    outputs, best = fair
    more = tmp_path / "more.toml"
    more.write_text(best.read_text().replace("seeds = [1, 2]", "seeds = [1, 2, 3]"))
    capsys.readouterr()
    assert main(["run", str(more), "--outputs", str(outputs), "--filter", "adamw"]) == 0
    assert "1 trained, 2 already complete, 0 failed" in capsys.readouterr().err
    cells = resolve_cells(load_matrix(more), load_plugins().registry)
    third = next(c for c in cells if c.name.startswith("gpt1-adamw") and c.name.endswith("-seed3"))
    assert json.loads((outputs / "fair" / third.id / "summary.json").read_text())["status"] == "ok"
    assert sorted(p.name for p in outputs.iterdir()) == ["fair"]
