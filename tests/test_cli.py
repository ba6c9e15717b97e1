"""The `bench` command as a user runs it, in this process through ``bench.cli.main`` (no interpreter
start per call); real subprocesses only where a process shows something `main` cannot: its exit
status and what it does when its stdout pipe is closed."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from bench.cli import main
from tests.conftest import REPO, TINY_DEFAULTS

TINY_GRID = TINY_DEFAULTS + """
[matrix]
model = ["lstm", "gpt1"]
optimizer = ["sgd", "adamw"]
n_layer = [1]
include = [{ model = "gpt1", optimizer = "adamw", n_layer = 2 }]
"""
ONE_CELL = '[matrix]\nmodel = ["lstm"]\noptimizer = ["sgd"]\n'


@pytest.fixture
def outputs(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BENCH_OUTPUTS", str(tmp_path / "outputs"))
    return tmp_path / "outputs"


@pytest.fixture
def bench(outputs, capsys):
    def call(*args: str) -> SimpleNamespace:
        code = main(list(args))
        captured = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=captured.out, stderr=captured.err)
    return call


def _files(root: Path) -> list[Path]:
    return sorted(root.rglob("*")) if root.exists() else []


def assert_one_line_error(result: SimpleNamespace, expected: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bench: error:"), result.stderr
    assert expected in lines[0], lines[0]


def test_run_then_report_end_to_end(bench, write_matrix, outputs):
    matrix = write_matrix(TINY_GRID)
    run = bench("run", str(matrix))
    assert run.returncode == 0, run.stderr
    assert "5 trained" in run.stderr
    cell_dirs = sorted((outputs / "tiny").iterdir())
    assert len(cell_dirs) == 5
    for cell_dir in cell_dirs:
        summary = json.loads((cell_dir / "summary.json").read_text())
        assert summary["status"] == "ok"
        epochs = [json.loads(line) for line in (cell_dir / "metrics.jsonl").read_text().splitlines()]
        assert [row["epoch"] for row in epochs if row["kind"] == "epoch"] == [1, 2]
        assert summary["eval_tokens"]["test"] == 599  # every test token but the first, exactly once

    report = bench("report", "--sort", "time", "--format", "github")
    assert report.returncode == 0, report.stderr
    perplexity = report.stdout.split("## tiny: perplexity")[1].split("\n## ")[0]
    table_rows = [line for line in perplexity.splitlines()
                  if line.startswith("|") and ("lstm" in line or "gpt1" in line)]
    assert len(table_rows) == 5

    again = bench("run", str(matrix))
    assert again.returncode == 0 and "5 already complete" in again.stderr

    # `bench report | head`: the reader goes away; no BrokenPipeError traceback, nothing on stderr.
    closed = _with_closed_stdout("report", env={"BENCH_OUTPUTS": str(outputs)})
    assert closed.stderr == "" and closed.returncode == 141


def test_dry_run_lists_cells_and_trains_nothing(bench, write_matrix, outputs):
    result = bench("run", str(write_matrix(TINY_GRID)), "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "5 cells" in result.stdout and "gpt1-L2-adamw" in result.stdout
    assert not outputs.exists()


def test_hw3_dry_run_shows_twelve_cells_with_parameter_counts(bench):
    result = bench("run", str(REPO / "matrices" / "hw3.toml"), "--dry-run")
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if "-L" in line]
    assert len(rows) == 12
    assert all("," in row for row in rows)  # formatted parameter counts
    assert "gpt1-L4-adamw" in result.stdout and "16,155,904" in result.stdout  # hw3's largest gpt1, exact


def test_list_shows_every_kind(bench):
    result = bench("list")
    assert result.returncode == 0
    for heading in ("models (4)", "optimizers (19)", "datasets (", "tokenizers (", "schedules (4)"):
        assert heading in result.stdout
    for name in ("gpt2-tiny", "llama", "momentum", "soap", "schedulefree-adamw", "synthetic", "wikitext2",
                 "tinyshakespeare", "cosine", "wsd"):
        assert name in result.stdout


GPT1_GRID = TINY_DEFAULTS + '[matrix]\nmodel = ["lstm", "gpt1"]\noptimizer = ["sgd"]\nn_layer = [1]\n'
BAD_INPUTS = {
    "malformed-toml": ("[defaults]\nmodel = \"lstm\"\nlr = = 1\n", {}, "line 3"),
    "unknown-model": (TINY_DEFAULTS + '[matrix]\nmodel = ["lsmt"]\noptimizer = ["sgd"]\n', {}, "did you mean 'lstm'"),
    "unknown-optimizer": (TINY_DEFAULTS + '[matrix]\nmodel = ["lstm"]\noptimizer = ["adamww"]\n', {}, "'adamw'"),
    # Issue 8 fault 11: a name from another framework gets bench's name.
    "unknown-key": (TINY_DEFAULTS + 'learning_rate = 1.0\n' + ONE_CELL, {},
                    "unknown key 'learning_rate'; did you mean 'lr'?"),
    # Single-value axes override the [defaults] above.
    "zero-lr": (TINY_DEFAULTS + ONE_CELL + 'lr = [0.0]\n', {}, "lr = 0.0"),
    "heads-vs-channels": (TINY_DEFAULTS + '[matrix]\nmodel = ["gpt1"]\noptimizer = ["sgd"]\nn_head = [3]\n', {},
                          "n_head"),
    "seq-too-long": (TINY_DEFAULTS + '[matrix]\nmodel = ["gpt2-tiny"]\noptimizer = ["sgd"]\nseq_len = [64]\n', {},
                     "context length"),
    "wrong-type": (TINY_DEFAULTS + ONE_CELL + 'batch_size = ["big"]\n', {}, "batch_size must be an integer"),
    "missing-data": ('[defaults]\nmodel = "lstm"\noptimizer = "sgd"\ndataset = "wikitext2"\ntokenizer = "byte"\n',
                     {"BENCH_OFFLINE": "1"}, "wikitext-2"),
    # Issue 8 fault 11: TOML syntax in the hint of a TOML file.
    "text-without-path": ('[defaults]\nmodel = "lstm"\noptimizer = "sgd"\ndataset = "text"\ntokenizer = "byte"\n',
                          {}, 'add `train_path = "path/to/train.txt"` to [defaults] or [matrix]'),
    # Issue 8 fault 11: a typo'd key inside an include entry (which then fits no combination and
    # becomes a cell of its own, with no model), and a typo of `include` itself.
    "include-typo-key": (GPT1_GRID + 'include = [{ modle = "gpt1", optimizer = "adamw", n_layer = 2 }]\n', {},
                         "unknown key 'modle'; did you mean 'model'?"),
    "include-typo": (GPT1_GRID + 'includ = [{ model = "gpt1", optimizer = "adamw", n_layer = 2 }]\n', {},
                     "matrix axis 'includ' holds tables; did you mean 'include'?"),
    # Issue 8 fault 6: a matrix name that cannot be a folder name.
    "name-nul": ('name = "tiny\\u0000x"\n' + TINY_DEFAULTS + ONE_CELL, {}, "control character '\\x00'"),
    "name-newline": ('name = "tiny\\nx"\n' + TINY_DEFAULTS + ONE_CELL, {}, "control character '\\n'"),
    "name-300-chars": (f'name = "{"n" * 300}"\n' + TINY_DEFAULTS + ONE_CELL, {}, "300 characters long"),
    # Issue 18: nesting deep enough for a RecursionError, in the TOML parser or after it.
    "arrays-900-deep": (f'x = {"[" * 900}{"]" * 900}\n' + TINY_DEFAULTS + ONE_CELL, {},
                        "nested too deeply for the TOML parser; a matrix needs at most 16 levels"),
    "include-200-deep": (TINY_DEFAULTS + ONE_CELL + f'include = [{"{ a = " * 200}1{" }" * 200}]\n', {},
                         "matrix.include nests arrays or tables more than 16 levels deep"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_exit_two_and_nothing_written(case, bench, write_matrix, outputs, tmp_path,
                                                            monkeypatch):
    body, env, expected = BAD_INPUTS[case]
    if case == "missing-data":
        env = {**env, "BENCH_DATA_DIR": str(tmp_path / "empty"), "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert_one_line_error(bench("run", str(write_matrix(body, name=case))), expected)
    assert not outputs.exists()


@pytest.mark.parametrize("expression, expected", [
    ("modle=gpt1", "--filter 'modle=gpt1': no cell has a key 'modle'; did you mean 'model'?"),
    ("model=gtp1", "--filter 'model=gtp1' matches none of the matrix's cells; model is one of gpt1, lstm; "
                   "did you mean 'gpt1'?"),
    ("model", "--filter 'model' matches none of the matrix's cells"),
])
def test_filter_that_matches_nothing_suggests(expression, expected, bench, write_matrix, outputs):
    assert_one_line_error(bench("run", str(write_matrix(GPT1_GRID)), "--filter", expression), expected)
    assert not outputs.exists()


def test_filter_selects_by_key_and_by_name(bench, write_matrix):
    chosen = bench("run", str(write_matrix(GPT1_GRID)), "--filter", "model=gpt1,n_layer=1", "--dry-run")
    assert "1 cell in matrix" in chosen.stdout and "gpt1-L1-sgd" in chosen.stdout
    by_name = bench("run", str(write_matrix(GPT1_GRID)), "--filter", "lstm", "--dry-run")
    assert "1 cell in matrix" in by_name.stdout and "lstm-L1-sgd" in by_name.stdout


def test_matrix_path_that_is_a_directory(bench, outputs):
    assert_one_line_error(bench("run", str(REPO / "matrices")),
                          f"matrix file {str(REPO / 'matrices')!r} is a directory; give a .toml file in it, "
                          f"e.g. {sorted(p.name for p in (REPO / 'matrices').glob('*.toml'))[0]}")
    assert not outputs.exists()


def test_read_only_outputs_folder(bench, write_matrix, outputs, monkeypatch):
    outputs.mkdir()
    outputs.chmod(0o555)
    if os.geteuid() == 0:  # root writes anyway: make the folder refuse as a read-only one would
        real_mkdir = os.mkdir

        def refuse(path, *args, **kwargs):
            if Path(path).parent == outputs:
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
            return real_mkdir(path, *args, **kwargs)
        monkeypatch.setattr(os, "mkdir", refuse)
    try:
        result = bench("run", str(write_matrix(TINY_DEFAULTS + ONE_CELL)))
    finally:
        outputs.chmod(0o755)
    assert_one_line_error(result, f"cannot write results in {str(outputs / 'tiny')!r}: Permission denied; "
                                  "make it writable or choose another folder with --outputs")
    assert _files(outputs) == []


def test_read_only_outputs_with_every_cell_finished_reports_and_exits_zero(bench, write_matrix, outputs,
                                                                           monkeypatch):
    """Issue 18: it exited 2 although there was nothing to write."""
    matrix = write_matrix(TINY_DEFAULTS + ONE_CELL)
    assert bench("run", str(matrix)).returncode == 0
    before = {p: p.stat().st_mtime_ns for p in _files(outputs)}
    real_open = os.open

    def read_only(path, flags, *args, **kwargs):  # as a read-only mount answers (root ignores chmod)
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and Path(path).is_relative_to(outputs):
            raise PermissionError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args, **kwargs)
    monkeypatch.setattr(os, "open", read_only)
    finished = bench("run", str(matrix))
    assert finished.returncode == 0, finished.stderr
    assert finished.stderr.startswith(f"bench: {outputs / 'tiny'} is read-only, but all 1 selected cells of 'tiny' "
                                      "are already complete; nothing to train")
    assert "lstm" in finished.stdout and {p: p.stat().st_mtime_ns for p in _files(outputs)} == before
    assert_one_line_error(bench("run", str(matrix), "--force"), "cannot write results in")


def test_lock_file_that_is_a_directory(bench, write_matrix, outputs):
    (outputs / "tiny" / ".lock").mkdir(parents=True)
    before = _files(outputs)
    assert_one_line_error(bench("run", str(write_matrix(TINY_DEFAULTS + ONE_CELL))),
                          f"the lock file {str(outputs / 'tiny' / '.lock')!r} is a directory; remove it "
                          "(no run uses it) and run again")
    assert _files(outputs) == before


def _with_closed_stdout(*args: str, env: dict[str, str],
                        flags: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """Run bench with a stdout pipe whose reader is already gone, as `bench ... | head` ends up."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run([sys.executable, *flags, "-m", "bench.cli", *args], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, env={**os.environ, **env}, timeout=300)
    finally:
        os.close(write_end)


def test_a_real_process_exits_two_on_bad_input_and_quietly_on_a_closed_pipe(write_matrix, tmp_path):
    """The one place the exit status itself is checked: in a real process, as shells and CI see it."""
    bad = subprocess.run([sys.executable, "-m", "bench.cli", "run", str(write_matrix(BAD_INPUTS["unknown-model"][0]))],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300,
                         env={**os.environ, "BENCH_OUTPUTS": str(tmp_path / "outputs")})
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [bad.stderr.strip()] and "did you mean 'lstm'" in bad.stderr
    # -X importtime lists every module imported (on stderr): `bench list` needs neither the report
    # libraries nor torch._dynamo (issue 11: they cost ~0.5 s and ~90 MiB).
    listing = _with_closed_stdout("list", env={}, flags=("-X", "importtime"))
    assert listing.returncode == 141
    stderr = listing.stderr.splitlines()
    assert all(line.startswith("import time:") for line in stderr), listing.stderr  # no traceback
    imported = {line.rsplit("|", 1)[1].strip() for line in stderr[1:]}
    assert "torch" in imported and not imported & {"pandas", "matplotlib", "torch._dynamo"}


def test_version_prints_the_installed_version(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"bench {version('bench-lm')}\n"


def test_keys_lists_every_harness_key_with_its_default_and_rule(bench, monkeypatch):
    from bench.schema import TRAINER_KEYS

    monkeypatch.setenv("COLUMNS", "100")
    result = bench("keys")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert all(len(line) <= 100 for line in lines)
    starts = {line.split()[0] for line in lines if line and not line.startswith(" ")}
    assert set(TRAINER_KEYS) <= starts
    assert lines[0].split() == ["key", "default", "rule", "meaning"]
    lr = next(line for line in lines if line.startswith("lr "))
    assert lr.split()[:4] == ["lr", "0.001", ">", "0"]
    assert next(line for line in lines if line.startswith("oom_retry ")).split()[1] == "false"
    assert next(line for line in lines if line.startswith("dataset ")).split()[1] == '"synthetic"'


@pytest.mark.parametrize("argv,expected", [
    (["rn"], "bench: error: unknown command 'rn'; did you mean 'run'?"),
    (["reprot"], "bench: error: unknown command 'reprot'; did you mean 'report'?"),
    (["fit", "isoflp", "m.toml"], "bench fit: error: unknown command 'isoflp'; did you mean 'isoflop'?"),
    (["qqq"], "bench: error: unknown command 'qqq'; choose from list, keys, run, estimate, report, plot, fit, eval, "
     "data"),
])
def test_a_misspelt_subcommand_is_one_line_exit_two(argv, expected, capsys):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert capsys.readouterr().err.splitlines() == [expected]


def test_other_usage_errors_keep_argparse_usage(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["run"])
    assert exited.value.code == 2
    assert "the following arguments are required: matrix" in capsys.readouterr().err


@pytest.mark.parametrize("flags", [[], ["--verbose"]])
def test_list_fits_a_100_column_terminal(flags, bench, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    result = bench("list", *flags)
    assert result.returncode == 0 and "gpt2-tiny" in result.stdout
    too_wide = [line for line in result.stdout.splitlines() if len(line) > 100]
    assert not too_wide
