"""Ray's local cluster failing to start is one line naming the cause and the fix (issue 18).

The failure is real: ray.init itself runs, with RAY_TMPDIR pointing at a file where Ray needs a folder."""

from __future__ import annotations

import pytest

from bench.cli import main
from tests.conftest import TINY_DEFAULTS

ray = pytest.importorskip("ray")


def test_a_local_ray_cluster_that_cannot_start_is_one_line(write_matrix, tmp_path, monkeypatch, capsys):
    if ray.is_initialized():  # another module's cluster is still attached to this process
        ray.shutdown()
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("RAY_TMPDIR", str(blocker))
    matrix = write_matrix(TINY_DEFAULTS + 'model = "lstm"\noptimizer = "sgd"\n')
    assert main(["run", str(matrix), "--executor", "ray", "--outputs", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == ("bench: error: cannot start a local Ray cluster (NotADirectoryError: [Errno 20] Not a "
                       f"directory: '{blocker}/ray'); Ray keeps its session files under $RAY_TMPDIR (default "
                       "/tmp/ray): point RAY_TMPDIR at a writable folder with free space "
                       f"('{blocker}/ray' is not one)"), err
    assert not any("Traceback" in line for line in err) and not ray.is_initialized()
