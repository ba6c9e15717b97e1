"""What a plugin hands to bench: a named factory, its default hyperparameters and a description."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

# Executors are components too: they run cells rather than configure them (see bench.executors);
# trackers observe cells (see bench.trackers).
KINDS = ("model", "optimizer", "dataset", "tokenizer", "schedule", "executor", "tracker")


@dataclass(frozen=True)
class Component:
    """One registrable thing.

    ``defaults`` is the complete set of hyperparameters the factory accepts as keyword
    arguments; matrix keys are routed to a component exactly when they appear here.
    ``tags`` carries small facts the harness needs before building anything
    (a dataset tagged ``"text"`` needs a tokenizer, one tagged ``"tokens"`` does not).
    ``depends_on`` names the distributions (as pip spells them) whose code computes this
    component's results besides the plugin's own, e.g. the library an optimizer wraps: their installed
    versions are recorded with each cell and an upgrade makes the cell stale (:mod:`bench.provenance`).
    The rules for keys (shared keys, harness keys such as an optimizer's ``lr``) are in
    :mod:`bench.hookspecs`.
    """

    name: str
    factory: Callable[..., Any]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    tags: frozenset[str] = frozenset()
    depends_on: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ValueError(f"component name must be a non-empty string, got {self.name!r}")
        object.__setattr__(self, "defaults", dict(self.defaults))
        object.__setattr__(self, "tags", frozenset(self.tags))
        # One name is a distribution, not a sequence of one-letter names.
        names = (self.depends_on,) if isinstance(self.depends_on, str) else tuple(self.depends_on)
        if not all(isinstance(n, str) and n.strip() for n in names):
            raise ValueError(f"depends_on must name distributions (non-empty strings), got {self.depends_on!r}")
        object.__setattr__(self, "depends_on", names)

    def params(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """The subset of a resolved cell config that this component's factory takes."""
        return {key: config[key] for key in self.defaults}

    def build(self, config: Mapping[str, Any], *args: Any, **passed: Any) -> Any:
        """Call the factory with the cell's values of the declared keys plus what the harness
        passes by name (``lr``, ``device_type``, ``total_steps``). A declared key that the harness
        also passes (an optimizer listing ``lr`` to set its own default) is given once: the
        resolved config already holds that same value."""
        return self.factory(*args, **{**self.params(config), **passed})
