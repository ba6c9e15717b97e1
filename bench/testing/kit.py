"""The kit's machinery: a named check bound to one component, and pytest parametrization.

A check is a plain function ``check_xxx(case)`` that raises :class:`ContractViolation` (an
``AssertionError``) whose message says what the component did wrong and what the contract wants.
:class:`KitCheck` binds such a function to one component (with its small test overrides), so
each pair becomes one pytest test with a readable id such as ``gru-check_causality_train``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping

from bench.components import Component
from bench.errors import DataMissingError

if TYPE_CHECKING:
    import pytest

# How a caller names one component to check: the component itself, the component with small
# hyperparameter overrides, or a label (the test id), the component and its overrides.
ComponentSpec = Component | tuple[Component, Mapping[str, Any]] | tuple[str, Component, Mapping[str, Any]]


class ContractViolation(AssertionError):
    """A component breaks the plugin contract; the message names the component, the check and the fix."""


def require(condition: object, message: str) -> None:
    """``assert`` that survives ``python -O`` and raises the kit's own error type."""
    if not condition:
        raise ContractViolation(message)


@dataclass(frozen=True)
class KitCheck:
    """One check bound to one component; calling it runs the check."""

    kind: str
    label: str
    component: Component
    overrides: Mapping[str, Any]
    function: Callable[[Any], None]
    make_case: Callable[[Component, Mapping[str, Any]], Any] = field(repr=False)

    @property
    def name(self) -> str:
        return self.function.__name__

    @property
    def id(self) -> str:
        return f"{self.label}-{self.name}"

    def __call__(self) -> None:
        try:
            case = self.make_case(self.component, self.overrides)
            self.function(case)
        except DataMissingError as exc:
            import pytest  # a check that cannot find its data is skipped, never passed or failed

            pytest.skip(f"{self.kind} {self.label!r}: {exc}")
        except ContractViolation as exc:
            raise ContractViolation(f"{self.kind} {self.label!r} fails {self.name}: {exc}") from None

    def __repr__(self) -> str:
        return self.id


@dataclass(frozen=True)
class KindChecks:
    """Every check for one kind of component and how to build their shared input."""

    kind: str
    checks: tuple[Callable[[Any], None], ...]
    make_case: Callable[[Component, Mapping[str, Any]], Any]


def known_overrides(component: Component, overrides: Mapping[str, Any], allowed: Iterable[str] = ()) -> None:
    """Overrides must be hyperparameters the component declares (typos would test nothing)."""
    unknown = sorted(set(overrides) - set(component.defaults) - set(allowed))
    if unknown:
        raise ValueError(f"{component.name} has no hyperparameters {unknown}; known: {sorted(component.defaults)}")


# Keys a check's caller may set besides the component's own hyperparameters.
_EXTRA_KEYS = {"model": ("vocab_size",), "optimizer": ("lr",), "schedule": ("lr",)}


def _kinds() -> dict[str, KindChecks]:
    # Imported here so that `import bench.testing` (which pytest does for every session once the
    # plugin is installed) does not import torch.
    from bench.testing import datasets, models, optimizers, schedules, tokenizers

    return {k.kind: k for k in (models.KIND, optimizers.KIND, schedules.KIND, datasets.KIND, tokenizers.KIND)}


def _unpack(spec: ComponentSpec) -> tuple[str, Component, Mapping[str, Any]]:
    if isinstance(spec, Component):
        return spec.name, spec, {}
    if len(spec) == 2:
        component, overrides = spec
        return component.name, component, overrides
    label, component, overrides = spec
    return label, component, overrides


def iter_checks(kind: str, spec: ComponentSpec) -> Iterator[KitCheck]:
    """Every check of ``kind`` bound to the component ``spec`` names, in a fixed order."""
    kinds = _kinds()
    if kind not in kinds:
        raise ValueError(f"unknown kind {kind!r}; one of {sorted(kinds)}")
    label, component, overrides = _unpack(spec)
    known_overrides(component, overrides, allowed=_EXTRA_KEYS.get(kind, ()))
    checks = kinds[kind]
    for function in checks.checks:
        yield KitCheck(kind, label, component, dict(overrides), function, checks.make_case)


def all_checks(*, models: Iterable[ComponentSpec] = (), optimizers: Iterable[ComponentSpec] = (),
               schedules: Iterable[ComponentSpec] = (), datasets: Iterable[ComponentSpec] = (),
               tokenizers: Iterable[ComponentSpec] = ()) -> list[KitCheck]:
    groups = {"model": models, "optimizer": optimizers, "schedule": schedules,
              "dataset": datasets, "tokenizer": tokenizers}
    return [check for kind, specs in groups.items() for spec in specs for check in iter_checks(kind, spec)]


def parametrize_with_checks(**components: Iterable[ComponentSpec]) -> pytest.MarkDecorator:
    """A ``pytest.mark.parametrize`` over every check of every component, one test each.

    Keyword arguments are ``models``, ``optimizers``, ``schedules``, ``datasets`` and ``tokenizers``;
    each takes components, ``(component, overrides)`` or ``(label, component, overrides)``::

        @parametrize_with_checks(models=[(GRU, {"n_embd": 16})], optimizers=[LION])
        def test_contract(check):
            check()
    """
    import pytest

    checks = all_checks(**components)
    return pytest.mark.parametrize("check", checks, ids=[c.id for c in checks])


def check_component(kind: str, spec: ComponentSpec) -> None:
    """Run every check of ``kind`` on one component; the first failure raises."""
    for check in iter_checks(kind, spec):
        check()
