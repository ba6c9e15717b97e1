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
