"""How numbers print in tables for people: formats that know their own precision and how to show
one more digit, and :func:`settle`, which gives a column just enough digits that values that differ
never print alike (0.00736 vs 0.00895, not 0.01 twice; val loss 3.6805 vs 3.6809, not 3.68 twice).

A format is a callable ``float -> str``; one with a ``finer()`` method can be refined. Plain
callables (a config value printed as written) are used as they are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable

EXTRA_DIGITS = 4  # at most this many digits beyond a column's own precision
SAME = 12  # values equal to this many significant digits are one value (float noise, not a difference)


def significant(value: float, digits: int) -> str:
    """``digits`` significant digits without an exponent between 1e-4 and 1e16 (1234 -> '1234',
    not '1.23e+03'; 0.000412 -> '0.000412'); Python's ``g`` outside that range."""
    if value == 0 or not math.isfinite(value):
        return f"{value:.{digits}g}"
    magnitude = math.floor(math.log10(abs(value)))
    if magnitude < -4 or magnitude >= 16:
        return f"{value:.{digits}g}"
    return f"{value:.{max(0, digits - 1 - magnitude)}f}"


@dataclass(frozen=True)
class Fixed:
    """A fixed number of decimals (losses: 4, they differ in the 3rd-4th place), optional suffix."""

    decimals: int
    suffix: str = ""

    def __call__(self, value: float) -> str:
        return f"{value:.{self.decimals}f}{self.suffix}"

    def finer(self) -> Fixed:
        return Fixed(self.decimals + 1, self.suffix)


@dataclass(frozen=True)
class Significant:
    digits: int = 3

    def __call__(self, value: float) -> str:
        return significant(value, self.digits)

    def finer(self) -> Significant:
        return Significant(self.digits + 1)


@dataclass(frozen=True)
class TwoDecimalsOrSignificant:
    """Two decimals (perplexities, MiB), but 3 significant digits below 0.1, where two decimals would
    print lr 0.001 as '0.00': 0.001 -> '0.001', 3.2e-05 -> '3.2e-05'."""

    decimals: int = 2
    digits: int = 3

    def __call__(self, value: float) -> str:
        return f"{value:.{self.digits}g}" if value != 0 and abs(value) < 0.1 else f"{value:.{self.decimals}f}"

    def finer(self) -> TwoDecimalsOrSignificant:
        return TwoDecimalsOrSignificant(self.decimals + 1, self.digits + 1)


@dataclass(frozen=True)
class PValue:
    """A p-value with ``digits`` significant digits, and below ``floor`` only '<0.001': a smaller p
    says nothing more a reader can use (and the test's assumptions are not that exact)."""

    digits: int = 2
    floor: float = 1e-3

    def __call__(self, value: float) -> str:
        return f"<{self.floor:g}" if value < self.floor else significant(value, self.digits)

    def finer(self) -> PValue:
        return PValue(self.digits + 1, self.floor)


SI_PREFIXES = ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


@dataclass(frozen=True)
class SI:
    """Significant digits with an SI prefix: 53084160 -> '53.1 M'."""

    digits: int = 3

    def __call__(self, value: float) -> str:
        for factor, prefix in SI_PREFIXES:
            if abs(value) >= factor:
                return f"{value / factor:.{self.digits}g} {prefix}"
        return f"{value:.{self.digits}g}"

    def finer(self) -> SI:
        return SI(self.digits + 1)


def integer(value: float) -> str:
    """A count with thousands separators; never refined (a count has no more digits to show)."""
    return f"{int(round(value)):,}"


def collisions(values: Iterable[float], fmt: Callable[[float], str]) -> int:
    """How many values print the same text as a different value before them."""
    seen: dict[str, set[float]] = {}
    for value in values:
        seen.setdefault(fmt(value), set()).add(float(f"{value:.{SAME}g}"))
    return sum(len(distinct) - 1 for distinct in seen.values())


def settle(fmt: Callable[[float], str], values: list[float]) -> Callable[[float], str]:
    """``fmt``, or the coarsest of its up to ``EXTRA_DIGITS`` finer versions that lets the most of
    ``values`` that differ print differently (values under a p-value's floor stay alike)."""
    candidates = [fmt]
    while len(candidates) <= EXTRA_DIGITS and hasattr(candidates[-1], "finer"):
        candidates.append(candidates[-1].finer())
    return min(candidates, key=lambda candidate: collisions(values, candidate))  # the first of equals
