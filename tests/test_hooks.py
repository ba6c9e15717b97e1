"""Lifecycle hooks are called through one guard: a failing implementation warns once per plugin and
neither stops the other implementations nor changes anything about the cell."""

from __future__ import annotations

import pluggy
import pytest

from bench import hookimpl, hookspecs
from bench.hooks import GuardedHooks


class Recorder:
    def __init__(self):
        self.steps = []

    @hookimpl
    def bench_log_step(self, cell, step, metrics):
        self.steps.append(step)


class Broken:
    @hookimpl
    def bench_log_step(self, step):
        raise ValueError(f"disk full at step {step}")

    @hookimpl
    def bench_run_end(self, cell, summary):
        raise RuntimeError("upload failed")


def _manager(*plugins):
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    for name, plugin in plugins:
        manager.register(plugin, name=name)
    return manager


def test_a_failing_hook_warns_once_per_plugin_and_the_others_still_run():
    recorder, warnings = Recorder(), []
    # Registered last, Broken is called first (pluggy's order): Recorder must still get every call.
    hooks = GuardedHooks(_manager(("recorder", recorder), ("broken", Broken())),
                         {"broken": "bench-broken-logger 1.0"}, warnings.append)
    for step in (5, 10, 15):
        hooks.bench_log_step(cell={"id": "x"}, step=step, metrics={"train_loss": 1.0})
    hooks.bench_run_end(cell={"id": "x"}, summary={"status": "ok"})
    assert recorder.steps == [5, 10, 15]
    assert warnings == ["bench: warning: plugin bench-broken-logger 1.0 failed in bench_log_step: ValueError: disk "
                        "full at step 5; the cell goes on and this plugin's later failures are not shown "
                        "(--disable-plugin broken turns it off)"]
    assert hooks.failures == {"broken": "bench_log_step: ValueError: disk full at step 5"}


def test_only_lifecycle_hooks_go_through_the_guard():
    hooks = GuardedHooks(_manager())
    hooks.bench_run_start(cell={}, total_steps=3)  # no implementation: nothing happens
    with pytest.raises(AttributeError, match="not a bench lifecycle hook"):
        hooks.bench_models  # noqa: B018 - the attribute access is what is tested
