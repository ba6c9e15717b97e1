"""benchmarks/gpu_acceptance.py where no GPU is: exit 0 with a report of skips; its pure helpers."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.matrix import load_matrix

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
SCRIPT = BENCHMARKS / "gpu_acceptance.py"


@pytest.fixture
def scripts(monkeypatch):
    """The script and its measurement module, imported the way running the script imports them."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module("gpu_acceptance"), importlib.import_module("gpu_measure")


def test_without_cuda_it_says_which_checks_need_it_and_exits_0(tmp_path):
    out = tmp_path / "report.md"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # no GPU, even on a machine that has one
    done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out)], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "No CUDA device here: 14 of 14 checks need one" in done.stdout and "14. hw3 matrix" in done.stdout
    text = out.read_text()
    assert "0 passed, 0 failed, 14 skipped of 14 checks" in text
    assert text.count("| SKIP | needs CUDA; no CUDA device here |") == 14  # and the rule, then no seconds
    recorded = json.loads(out.with_suffix(".json").read_text())
    assert set(recorded["checks"]) == {"nvml_identity", "memory_ordering", "sampler_overhead", "step_timing",
                                       "mixed_precision", "tf32", "compile", "pin_memory", "jobs_oom", "mfu",
                                       "determinism", "sigkill_resume", "hellaswag_bf16", "hw3"}


def test_judge_rewrites_the_report_from_recorded_numbers(scripts, tmp_path):
    script, _ = scripts
    recorded = {"environment": {"device": "NVIDIA H200", "torch": "2.13.0"}, "dry_run": False, "notes": [],
                "checks": {"tf32": {"state": "measured", "numbers": {"ms_off": 3.0, "ms_on": 0.5, "warnings": []}}}}
    source = tmp_path / "recorded.json"
    source.write_text(json.dumps(recorded))
    assert script.main(["--judge", str(source), "--out", str(tmp_path / "again.md")]) == 0
    text = (tmp_path / "again.md").read_text()
    assert "| 6 | TF32 | PASS | 4096^2 fp32 matmul: 3.000 ms without TF32, 0.500 ms with (6.00x)" in text
    assert "1 passed, 0 failed, 13 skipped" in text


def test_only_takes_numbers_or_keys_and_rejects_the_rest(scripts):
    script, _ = scripts
    assert script.selected("1,tf32") == {"nvml_identity", "tf32"}
    assert script.selected(None) is None
    with pytest.raises(SystemExit, match="unknown check"):
        script.selected("15")


def test_the_matrices_it_writes_are_valid(scripts, tmp_path, monkeypatch):
    _, measure = scripts
    one = tmp_path / "one.toml"
    one.write_text(measure.matrix_text("oom", {"model": "gpt2-tiny", "seq_len": 64}, {"batch_size": [8, 99998, 10]},
                                       [{"batch_size": 99998, "n_embd": 1024}]))
    cells = load_matrix(one).combinations
    assert [c["batch_size"] for c in cells] == [8, 99998, 10] and cells[1]["n_embd"] == 1024
    hw3 = tmp_path / "hw3.toml"
    hw3.write_text(measure.hw3_matrix(200, 0))
    matrix = load_matrix(hw3)
    assert matrix.name == "hw3_acceptance" and len(matrix.combinations) == 12
    assert matrix.defaults["max_steps"] == 200 and "max_chars" not in matrix.defaults


def test_the_time_guard_cuts_a_check_off_and_the_script_still_reports(tmp_path):
    out = tmp_path / "report.md"
    # Check 12 starts `bench run` three times, one process after another: it cannot finish in 3 s.
    done = subprocess.run([sys.executable, str(SCRIPT), "--cpu-dry-run", "--only", "12", "--budget-s", "3",
                           "--out", str(out)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 0, done.stderr
    row = next(line for line in out.read_text().splitlines() if line.startswith("| 12 |"))
    assert "| SKIP | " in row and "time guard" in row
    assert "CPU dry run" in out.read_text().splitlines()[0]
