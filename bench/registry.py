"""Load plugins through pluggy, each one in isolation, and index what they register, by kind and name.

A plugin that fails to import, to register, or to answer a registration hook is reported in one
warning naming its distribution and the error; every other plugin still loads (as pytest does).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib
import importlib.metadata as metadata
import os
import types
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import pluggy

from bench import hookspecs
from bench.components import KINDS, Component
from bench.errors import ConfigError
from bench.hooks import GuardedHooks, stderr_line
from bench.provenance import DISTRIBUTION, installed_version  # DISTRIBUTION: bench's own, the built-ins'

ENTRY_POINT_GROUP = "bench.plugins"
DISABLE_ENV = "BENCH_DISABLE_PLUGINS"
NO_AUTOLOAD_ENV = "BENCH_DISABLE_PLUGIN_AUTOLOAD"

_HOOK_BY_KIND = {
    "model": "bench_models",
    "optimizer": "bench_optimizers",
    "schedule": "bench_schedules",
    "dataset": "bench_datasets",
    "tokenizer": "bench_tokenizers",
    "executor": "bench_executors",
    "tracker": "bench_trackers",
}


class DuplicateComponentError(ConfigError):
    pass


@dataclass(frozen=True)
class Provider:
    """Where a plugin came from: its distribution (``None`` for a bare ``--plugin`` module) and module."""

    distribution: str | None
    version: str | None
    module: str

    @property
    def label(self) -> str:
        return f"{self.distribution} {self.version}" if self.distribution else f"module {self.module}"


@dataclass(frozen=True)
class Registered:
    """A component as registered. ``libraries`` pairs each distribution of its ``depends_on`` with
    the version installed when the registry was built (``None``: not installed)."""

    component: Component
    kind: str
    provider: Provider
    libraries: tuple[tuple[str, str | None], ...] = ()

    @property
    def distribution(self) -> str:
        """"name version" of the providing distribution (or "module M" for a bare module)."""
        return self.provider.label


class Registry:
    """Every component of every kind, each with the distribution that provided it.

    Two plugins registering the same name of one kind is an error only where that name is used:
    :meth:`get` refuses it, listing stays possible.
    """

    def __init__(self, entries: Iterable[Registered]):
        self._by_kind: dict[str, dict[str, list[Registered]]] = {kind: {} for kind in KINDS}
        for entry in entries:
            self._by_kind[entry.kind].setdefault(entry.component.name, []).append(entry)

    def names(self, kind: str) -> list[str]:
        return sorted(self._by_kind[kind])

    def entries(self, kind: str) -> list[Registered]:
        """Every registration of this kind, clashing ones included, sorted by name."""
        return [entry for name in self.names(kind) for entry in self._by_kind[kind][name]]

    def clashes(self) -> list[str]:
        """One message per name that two or more plugins register."""
        return [self._clash_message(kind, name) for kind in KINDS for name in self.names(kind)
                if len(self._by_kind[kind][name]) > 1]

    def has(self, kind: str, name: str) -> bool:
        return name in self._by_kind[kind]

    def entry(self, kind: str, name: str) -> Registered:
        found = self._by_kind[kind].get(name)
        if not found:
            raise ConfigError(unknown_name_message(kind, name, self.names(kind)))
        if len(found) > 1:
            raise DuplicateComponentError(self._clash_message(kind, name))
        return found[0]

    def registrations(self, kind: str, name: str) -> list[Registered]:
        """Every registration of one name (more than one only when plugins clash)."""
        return list(self._by_kind[kind].get(name, []))

    def get(self, kind: str, name: str) -> Component:
        return self.entry(kind, name).component

    def _clash_message(self, kind: str, name: str) -> str:
        found = self._by_kind[kind][name]
        providers = " and ".join(sorted(e.distribution for e in found))
        return (f"{kind} {name!r} is registered by both {providers}; uninstall one, or turn one off with "
                f"--disable-plugin NAME (`bench list --verbose` shows the plugin names)")


def unknown_name_message(kind: str, name: object, known: list[str]) -> str:
    close = difflib.get_close_matches(str(name), known, n=3, cutoff=0.5)
    hint = (f"did you mean {', '.join(repr(c) for c in close)}?" if close
            else f"registered: {', '.join(known) or 'none'}")
    return f"unknown {kind} {name!r}; {hint} (`bench list` shows every {kind})"


# -- choosing and loading plugins ---------------------------------------------------------


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


@dataclass(frozen=True)
class PluginSelection:
    """Which plugins to load: ``--disable-plugin``/``BENCH_DISABLE_PLUGINS`` names (an entry-point name
    or a distribution name) are skipped; with ``BENCH_DISABLE_PLUGIN_AUTOLOAD`` set, third-party entry
    points load only when named by ``--plugin`` (an entry-point name or an importable module)."""

    disabled: frozenset[str] = frozenset()
    explicit: tuple[str, ...] = ()
    autoload: bool = True

    @classmethod
    def from_options(cls, disable: Iterable[str] = (), plugins: Iterable[str] = (),
                     environ: Mapping[str, str] = os.environ) -> PluginSelection:
        disabled = {name for item in disable for name in _names(item)} | set(_names(environ.get(DISABLE_ENV, "")))
        autoload = environ.get(NO_AUTOLOAD_ENV, "").strip().lower() in ("", "0", "false", "no")
        return cls(frozenset(disabled), tuple(dict.fromkeys(plugins)), autoload)

    def without(self, *names: str) -> PluginSelection:
        """The same selection with these plugins disabled too."""
        return dataclasses.replace(self, disabled=self.disabled | frozenset(names))

    def skips(self, *names: str | None) -> bool:
        return any(name is not None and _norm(name) in {_norm(d) for d in self.disabled} for name in names)


def _norm(name: str) -> str:
    return name.lower().replace("_", "-")


@dataclass
class PluginRecord:
    """One line of ``bench list --verbose``."""

    name: str  # the entry-point name (the name --disable-plugin takes), or the --plugin module
    provider: Provider
    status: str  # loaded, failed, disabled, not autoloaded
    error: str = ""


@dataclass
class Plugins:
    manager: pluggy.PluginManager
    registry: Registry
    hooks: GuardedHooks
    records: list[PluginRecord] = field(default_factory=list)
    selection: PluginSelection = field(default_factory=PluginSelection)


def load_plugins(selection: PluginSelection | None = None, extra_plugins: Iterable[object] = (),
                 warn: Callable[[str], None] = stderr_line, hook_warn: Callable[[str], None] | None = None) -> Plugins:
    """Every selected plugin, loaded one by one; failures become warnings (``warn``) and ``failed``
    records. ``hook_warn`` (default ``warn``) reports lifecycle hooks that fail later."""
    selection = selection or PluginSelection.from_options()
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    records: list[PluginRecord] = []
    providers: dict[str, Provider] = {}
    for dist, ep in _entry_points():
        provider = Provider(dist.metadata["name"], dist.version, ep.value)
        if any(record.name == ep.name for record in records):
            continue  # the same distribution seen twice on sys.path; pluggy keeps the first too
        builtin = _norm(provider.distribution or "") == DISTRIBUTION
        status = ("disabled" if selection.skips(ep.name, provider.distribution) else
                  "not autoloaded" if not (selection.autoload or builtin or ep.name in selection.explicit) else "")
        _load_one(manager, ep.name, ep.load, provider, status, records, providers, warn,
                  origin=f"entry point {ep.name} = {ep.value}")
    entry_point_names = {record.name for record in records}
    for module in selection.explicit:
        if module not in entry_point_names:
            provider = Provider(*_module_distribution(module), module)
            status = "disabled" if selection.skips(module) else ""
            _load_one(manager, module, functools.partial(importlib.import_module, module), provider, status,
                      records, providers, warn, origin=f"--plugin {module}")
    _warn_unmatched(selection, records, warn)
    for plugin in extra_plugins:
        name = manager.register(plugin)
        providers[str(name)] = Provider(None, None, _object_name(plugin))
    registry = build_registry(manager, providers, records, warn)
    labels = {name: provider.label for name, provider in providers.items()}
    return Plugins(manager, registry, GuardedHooks(manager, labels, hook_warn or warn), records, selection)


def _warn_unmatched(selection: PluginSelection, records: list[PluginRecord], warn: Callable[[str], None]) -> None:
    """One warning per --disable-plugin name that names no plugin (a typo would otherwise leave the
    plugin loaded without a word). Not an error: $BENCH_DISABLE_PLUGINS may name plugins that are only
    installed on some machines."""
    entry_names = [record.name for record in records]
    known = set(entry_names) | {r.provider.distribution for r in records if r.provider.distribution}
    by_norm = {_norm(name): name for name in [*sorted(known - set(entry_names)), *entry_names]}  # entry names win
    for name in sorted(selection.disabled):
        if _norm(name) not in by_norm:
            close = difflib.get_close_matches(_norm(name), list(by_norm), n=1, cutoff=0.6)
            hint = f"did you mean {by_norm[close[0]]!r}? " if close else ""
            warn(f"bench: warning: --disable-plugin {name!r} matches no installed plugin; {hint}"
                 f"`bench list --verbose` shows each plugin's name ({', '.join(sorted(known))})")


def _entry_points() -> list[tuple[metadata.Distribution, metadata.EntryPoint]]:
    return [(dist, ep) for dist in metadata.distributions() for ep in dist.entry_points
            if ep.group == ENTRY_POINT_GROUP]


def _object_name(plugin: object) -> str:
    """A module's name, or an object's class path: stable across processes, unlike its repr."""
    if isinstance(plugin, types.ModuleType):
        return plugin.__name__
    kind = plugin if isinstance(plugin, type) else type(plugin)
    return f"{kind.__module__}.{kind.__qualname__}"


def _module_distribution(module: str) -> tuple[str | None, str | None]:
    """The installed distribution that ships this module's top-level package, if any."""
    for dist_name in metadata.packages_distributions().get(module.split(".")[0], []):
        try:
            return dist_name, metadata.version(dist_name)
        except metadata.PackageNotFoundError:
            continue
    return None, None


def _load_one(manager: pluggy.PluginManager, name: str, load: Callable[[], Any], provider: Provider,
              status: str, records: list[PluginRecord], providers: dict[str, Provider],
              warn: Callable[[str], None], origin: str) -> None:
    record = PluginRecord(name, provider, status or "loaded")
    records.append(record)
    if status:
        return
    try:
        manager.register(load(), name=name)
    except Exception as exc:  # noqa: BLE001 - one broken plugin must not take the others down
        record.status, record.error = "failed", _one_line(exc)
        warn(f"bench: warning: plugin {provider.label} ({origin}) failed to load: "
             f"{record.error}; the other plugins work (--disable-plugin {name} silences this)")
        return
    providers[name] = provider


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:300]


def plugin_manager(extra_plugins: Iterable[object] = ()) -> pluggy.PluginManager:
    """A plugin manager with every selected ``bench.plugins`` entry point loaded."""
    return load_plugins(extra_plugins=extra_plugins).manager


def build_registry(manager: pluggy.PluginManager, providers: Mapping[str, Provider] | None = None,
                   records: list[PluginRecord] | None = None, warn: Callable[[str], None] = stderr_line) -> Registry:
    """Ask every plugin for its components; a registration hook that raises or returns something
    other than Components is reported and skipped, the rest are kept."""
    if providers is None:  # a manager loaded elsewhere: its plugins are named after their entry points
        providers = {}
        for dist, ep in _entry_points():
            providers.setdefault(ep.name, Provider(dist.metadata["name"], dist.version, ep.value))
    by_name = {record.name: record for record in records or []}
    entries: list[Registered] = []
    versions: dict[str, str | None] = {}
    for kind, hook_name in _HOOK_BY_KIND.items():
        for impl in getattr(manager.hook, hook_name).get_hookimpls():
            provider = providers.get(impl.plugin_name, Provider(None, None, impl.plugin_name))
            try:
                components = list(impl.function() or [])
                bad = [c for c in components if not isinstance(c, Component)]
                if bad:
                    raise TypeError(f"{hook_name} returned a {type(bad[0]).__name__}; return bench.Component objects")
            except Exception as exc:  # noqa: BLE001 - isolate the plugin, keep the others
                error = _one_line(exc)
                if impl.plugin_name in by_name:
                    by_name[impl.plugin_name].status = "failed"
                    by_name[impl.plugin_name].error = f"{hook_name}: {error}"
                warn(f"bench: warning: plugin {provider.label} failed in {hook_name}: {error}; its {kind}s are "
                     f"left out, the other plugins work (--disable-plugin {impl.plugin_name} silences this)")
                continue
            entries.extend(Registered(component, kind, provider, _library_versions(component, versions))
                           for component in components)
    return Registry(entries)


def _library_versions(component: Component, versions: dict[str, str | None]) -> tuple[tuple[str, str | None], ...]:
    """The installed version of each library the component depends on, each looked up once per
    registry (``versions`` caches them: a lookup scans sys.path)."""
    for name in component.depends_on:
        if name not in versions:
            versions[name] = installed_version(name)
    return tuple((name, versions[name]) for name in component.depends_on)
