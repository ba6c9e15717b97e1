"""The public API: what bench, bench.hookspecs and bench.testing export. Removing or renaming a
name here is a breaking change for plugins: deprecate it first (see bench.hookspecs, Stability)."""

from __future__ import annotations

import importlib
import warnings
from importlib import metadata

import pytest

import bench
from bench import hookspecs
from tests.testing.broken_components import LEAK

PUBLIC = {
    "bench": {"PLUGIN_API_VERSION", "Component", "Corpus", "LanguageModel", "TextFile", "TokenShards", "Tokenizer",
             "hookimpl"},
    "bench.hookspecs": {
        "PLUGIN_API_VERSION", "PROJECT", "hookimpl", "hookspec", "bench_models", "bench_optimizers",
        "bench_schedules", "bench_datasets", "bench_tokenizers", "bench_executors", "bench_trackers", "bench_run_start",
        "bench_log_step", "bench_evaluation", "bench_run_end"},
    "bench.testing": {
        "ContractViolation", "KitCheck", "ModelChecks", "all_checks", "check_component", "iter_checks",
        "parametrize_with_checks", "check_model", "check_optimizer", "check_schedule", "check_dataset",
        "check_tokenizer", "iter_model_checks", "bench_registry"},
}


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_public_names_are_declared_and_importable(module):
    imported = importlib.import_module(module)
    assert set(imported.__all__) == PUBLIC[module]  # additions go here too; removals need a deprecation first
    for name in imported.__all__:
        assert getattr(imported, name) is not None


def test_versions():
    assert bench.__version__ == metadata.version("bench-lm")
    major, minor = map(int, hookspecs.PLUGIN_API_VERSION.split("."))
    assert bench.PLUGIN_API_VERSION == hookspecs.PLUGIN_API_VERSION and major >= 1 and minor >= 0


def test_iter_model_checks_old_pair_iteration_still_works_with_a_deprecation_warning():
    from bench.testing import iter_model_checks

    checks = iter_model_checks(LEAK, 13)  # vocab_size positionally, as the old signature took it
    assert checks["check_output_shape"].name == "check_output_shape"  # the dict usage: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sorted(checks.keys()) == sorted(dict(checks)) and "check_deterministic" in checks
    with pytest.warns(DeprecationWarning, match=r"iterating iter_model_checks\(\.\.\.\) for \(name, check\) pairs "
                                                r"is deprecated"):
        pairs = [(name, check) for name, check in checks]  # the old usage
    assert [name for name, _ in pairs] == list(checks.keys())
    dict(pairs)["check_output_shape"]()  # and the checks run, on vocab_size 13


def test_the_contract_module_states_what_a_plugin_must_know():
    text = hookspecs.__doc__
    for topic in ("hidden_after(prefix", "head(hidden(idx)) == forward(idx)", "``bench_role``", "``matrix``",
                  "``lr`` is <= 0", "``lr < 0`` raises ``ValueError``", "PYTHONHASHSEED", "after 8 Adam steps",
                  "DeprecationWarning"):
        assert topic in text, topic
