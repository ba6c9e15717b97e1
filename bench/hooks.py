"""The one place lifecycle hooks are called from, so a failing logger plugin never changes a cell's
outcome (see "Hook errors" in :mod:`bench.hookspecs`)."""

from __future__ import annotations

import sys
from typing import Any, Callable, Mapping

import pluggy

LIFECYCLE_HOOKS = ("bench_run_start", "bench_log_step", "bench_evaluation", "bench_run_end")


def stderr_line(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class GuardedHooks:
    """Stands where ``manager.hook`` stood: ``hooks.bench_log_step(cell=..., step=..., metrics=...)``.

    Each implementation is called on its own, in pluggy's order (last registered first), so one
    plugin raising neither stops the others nor reaches the trainer. The first failure of a plugin
    is reported once, naming its distribution; its later failures are silent and it keeps being
    called (a logger that fails on one step may work on the next).
    """

    def __init__(self, manager: pluggy.PluginManager, providers: Mapping[str, str] | None = None,
                 warn: Callable[[str], None] = stderr_line):
        self._manager = manager
        self._providers = dict(providers or {})
        self._warn = warn
        self.failures: dict[str, str] = {}  # plugin name -> first "hook: error" seen

    def __getattr__(self, name: str) -> Callable[..., None]:
        if name not in LIFECYCLE_HOOKS:
            raise AttributeError(f"{name!r} is not a bench lifecycle hook ({', '.join(LIFECYCLE_HOOKS)})")
        return lambda **kwargs: self.call(name, kwargs)

    def call(self, name: str, kwargs: dict[str, Any]) -> None:
        for impl in reversed(getattr(self._manager.hook, name).get_hookimpls()):
            if impl.hookwrapper or impl.wrapper:
                self._report(impl, name, "hook wrappers are not supported for lifecycle hooks; ignored")
                continue
            try:
                impl.function(*[kwargs[arg] for arg in impl.argnames])
            except Exception as exc:  # noqa: BLE001 - a logger's bug must not end or relabel a cell
                self._report(impl, name, f"{type(exc).__name__}: {exc}".splitlines()[0][:300])

    def _report(self, impl: pluggy.HookImpl, hook: str, problem: str) -> None:
        if impl.plugin_name in self.failures:
            return
        self.failures[impl.plugin_name] = f"{hook}: {problem}"
        provider = self._providers.get(impl.plugin_name, impl.plugin_name)
        self._warn(f"bench: warning: plugin {provider} failed in {hook}: {problem}; the cell goes on "
                   f"and this plugin's later failures are not shown (--disable-plugin {impl.plugin_name} "
                   f"turns it off)")
