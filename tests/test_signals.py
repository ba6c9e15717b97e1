"""Graceful stop: the first signal is a request, the second stops at once."""

from __future__ import annotations

import os
import signal

import pytest

from bench.signals import GracefulStop


def test_first_signal_requests_a_stop_second_interrupts(capfd):
    before = signal.getsignal(signal.SIGTERM)
    with GracefulStop() as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested and stop.cause == "SIGTERM" and stop.exit_code == 143
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGTERM) is before
    assert "SIGTERM received; finishing the current step" in capfd.readouterr().err


def test_before_training_the_first_signal_stops_at_once():
    with GracefulStop() as stop:
        with pytest.raises(KeyboardInterrupt), stop.at_once():
            os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested and stop.forced and stop.cause == "SIGTERM"


def test_a_sigterm_while_data_loads_ends_bench_run_at_once(write_matrix, tmp_path, monkeypatch, capsys):
    """Issue 18: the handler is installed before any data is built, and with no step to finish yet the
    first SIGTERM ends the run right away (the loader is not waited for)."""
    import time

    from bench import cli
    from bench.data import loading
    from tests.conftest import TINY_DEFAULTS

    def slow_loading(configs, registry):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(60)  # a tokenizer busy for minutes
        raise AssertionError("not interrupted")

    monkeypatch.setattr(loading, "data_problems", slow_loading)
    before = signal.getsignal(signal.SIGTERM)
    matrix = write_matrix(TINY_DEFAULTS + 'model = "lstm"\noptimizer = "sgd"\n')
    started = time.monotonic()
    assert cli.main(["run", str(matrix), "--outputs", str(tmp_path / "out")]) == 130
    assert time.monotonic() - started < 30 and signal.getsignal(signal.SIGTERM) is before
    assert "bench: interrupted" in capsys.readouterr().err and not (tmp_path / "out").exists()
