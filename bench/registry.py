"""Load plugins through pluggy and index what they register, by kind and name."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Iterable

import pluggy

from bench import hookspecs
from bench.components import KINDS, Component
from bench.errors import ConfigError

ENTRY_POINT_GROUP = "bench.plugins"

_HOOK_BY_KIND = {
    "model": "bench_models",
    "optimizer": "bench_optimizers",
    "schedule": "bench_schedules",
    "dataset": "bench_datasets",
    "tokenizer": "bench_tokenizers",
    "executor": "bench_executors",
}


class DuplicateComponentError(ConfigError):
    pass


@dataclass(frozen=True)
class Registered:
    component: Component
    kind: str
    distribution: str  # "name version" of the providing distribution, or the plugin's name


class Registry:
    """Every component of every kind, each with the distribution that provided it."""

    def __init__(self, entries: Iterable[Registered]):
        self._by_kind: dict[str, dict[str, Registered]] = {kind: {} for kind in KINDS}
        for entry in entries:
            table = self._by_kind[entry.kind]
            previous = table.get(entry.component.name)
            if previous is not None:
                raise DuplicateComponentError(
                    f"{entry.kind} {entry.component.name!r} is registered by both "
                    f"{previous.distribution} and {entry.distribution}; uninstall or rename one"
                )
            table[entry.component.name] = entry

    def names(self, kind: str) -> list[str]:
        return sorted(self._by_kind[kind])

    def entries(self, kind: str) -> list[Registered]:
        return [self._by_kind[kind][name] for name in self.names(kind)]

    def has(self, kind: str, name: str) -> bool:
        return name in self._by_kind[kind]

    def get(self, kind: str, name: str) -> Component:
        try:
            return self._by_kind[kind][name].component
        except KeyError:
            raise ConfigError(unknown_name_message(kind, name, self.names(kind))) from None


def unknown_name_message(kind: str, name: object, known: list[str]) -> str:
    close = difflib.get_close_matches(str(name), known, n=3, cutoff=0.5)
    hint = (f"did you mean {', '.join(repr(c) for c in close)}?" if close
            else f"registered: {', '.join(known) or 'none'}")
    return f"unknown {kind} {name!r}; {hint} (`bench list` shows every {kind})"


def plugin_manager(extra_plugins: Iterable[object] = ()) -> pluggy.PluginManager:
    """A plugin manager with every installed ``bench.plugins`` entry point loaded."""
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    manager.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    for plugin in extra_plugins:
        manager.register(plugin)
    return manager


def _distribution_names(manager: pluggy.PluginManager) -> dict[int, str]:
    names = {}
    for plugin, dist in manager.list_plugin_distinfo():
        names[id(plugin)] = f"{dist.metadata['name']} {dist.version}"
    return names


def build_registry(manager: pluggy.PluginManager) -> Registry:
    distributions = _distribution_names(manager)
    entries = []
    for kind, hook_name in _HOOK_BY_KIND.items():
        hook = getattr(manager.hook, hook_name)
        for impl in hook.get_hookimpls():
            provider = distributions.get(id(impl.plugin), impl.plugin_name)
            for component in impl.function() or []:
                if not isinstance(component, Component):
                    raise ConfigError(
                        f"plugin {provider} returned {type(component).__name__} from {hook_name}; "
                        "return bench.Component objects"
                    )
                entries.append(Registered(component, kind, provider))
    return Registry(entries)
