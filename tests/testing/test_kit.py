"""The kit catches what it promises to catch, with a message a plugin author can act on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from bench.components import Component
from bench.testing import ContractViolation, all_checks, check_optimizer, iter_model_checks, parametrize_with_checks
from tests.testing.broken_components import LEAK, signum

REPO = Path(__file__).resolve().parents[2]

# -- models --------------------------------------------------------------------------------------


def test_a_model_leaking_the_future_only_in_train_mode_fails_the_train_mode_check():
    checks = iter_model_checks(LEAK)
    checks["check_causality_eval"]()  # eval mode really is causal
    with pytest.raises(ContractViolation) as info:
        checks["check_causality_train"]()
    message = str(info.value)
    assert message.startswith("model 'train-leak' fails check_causality_train: in train mode, logits at positions < 1")
    assert "the model sees the future" in message and "\n" not in message


def test_a_hidden_after_that_forgets_the_prefix_fails_its_check():
    from bench_plugins.models import lstm

    class Forgetful(lstm.LSTMLanguageModel):
        def hidden_after(self, prefix, suffixes):
            return self.hidden(suffixes)  # as if every ending started a new text

    forgetful = Component("forgetful", lambda vocab_size, n_embd=8: Forgetful(
        vocab_size, n_layer=1, n_embd=n_embd, n_hidden=n_embd, dropout=0.0, tie_weights=False), {"n_embd": 8})
    checks = iter_model_checks(forgetful)
    checks["check_hidden_head"]()
    with pytest.raises(ContractViolation, match="fails check_hidden_after: hidden_after.prefix, suffixes. differs"):
        checks["check_hidden_after"]()


def test_factory_returning_the_wrong_type_is_named():
    wrong = Component("linear", lambda vocab_size: nn.Linear(4, vocab_size), {})
    with pytest.raises(ContractViolation, match="factory returned Linear, not a bench.lm.LanguageModel"):
        iter_model_checks(wrong)["check_output_shape"]()


def test_unknown_override_is_refused():
    with pytest.raises(ValueError, match=r"has no hyperparameters \['n_hidden'\]"):
        iter_model_checks(LEAK, n_hidden=3)


# -- optimizers ----------------------------------------------------------------------------------


def test_a_correct_sign_based_optimizer_passes():
    check_optimizer(Component("signum", signum(), {"beta": 0.9}), lr=1e-2)


def test_an_optimizer_whose_load_state_dict_drops_state_fails_the_round_trip():
    broken = Component("signum-drops-state", signum(drop_state=True), {"beta": 0.9})
    with pytest.raises(ContractViolation) as info:
        check_optimizer(broken, lr=1e-2)
    message = str(info.value)
    assert message.startswith("optimizer 'signum-drops-state' fails check_state_round_trip: 3 steps + state_dict "
                              "save/load + 3 steps differ from 6 uninterrupted steps in ")
    assert "load_state_dict must restore every buffer" in message


def test_an_optimizer_ignoring_the_group_lr_fails():
    broken = Component("signum-fixed-lr", signum(fixed_lr=True), {"beta": 0.9})
    with pytest.raises(ContractViolation) as info:
        check_optimizer(broken, lr=1e-2)
    message = str(info.value)
    assert message.startswith("optimizer 'signum-fixed-lr' fails check_uses_group_lr: setting param_groups[0]['lr']")
    assert "every learning-rate schedule would silently do nothing" in message


def test_an_optimizer_that_does_nothing_fails():
    frozen = Component("frozen", lambda params, *, lr, device_type: torch.optim.SGD(params, lr=0.0), {})
    with pytest.raises(ContractViolation, match="fails check_step_changes_parameters: two steps at lr=0.001 left"):
        check_optimizer(frozen)


# -- parametrization and the pytest plugin -------------------------------------------------------


def test_parametrize_gives_one_test_per_check_with_readable_ids():
    mark = parametrize_with_checks(models=[("leak-small", LEAK, {"n_embd": 4})],
                                   optimizers=[Component("signum", signum(), {"beta": 0.9})])
    argname, checks = mark.args[0], mark.args[1]
    ids = mark.kwargs["ids"]
    assert argname == "check" and len(checks) == len(ids)
    assert "leak-small-check_causality_train" in ids and "signum-check_state_round_trip" in ids
    assert len(set(ids)) == len(ids)
    assert [c.kind for c in all_checks(schedules=[], datasets=[])] == []


BROKEN_SUITE = """
from bench.components import Component
from bench.testing import parametrize_with_checks
from tests.testing.broken_components import LEAK, signum

@parametrize_with_checks(models=[LEAK], optimizers=[Component("drops", signum(drop_state=True), {"beta": 0.9})])
def test_contract(check):
    check()
"""


def test_pytest_plugin_reports_a_violation_as_its_message(tmp_path):
    """Run pytest, as a plugin author would, with only the kit's plugin loaded, on broken components."""
    (tmp_path / "test_broken.py").write_text(BROKEN_SUITE)
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "bench.testing", "-q", "-p", "no:cacheprovider",
                             "test_broken.py"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    assert "FAILED test_broken.py::test_contract[train-leak-check_causality_train]" in out
    assert "FAILED test_broken.py::test_contract[drops-check_state_round_trip]" in out
    assert "model 'train-leak' fails check_causality_train: in train mode" in out
    assert "Traceback" not in out and "def _causality" not in out  # the message, not the kit's source
    assert " passed" in out  # the other checks of the same components pass
