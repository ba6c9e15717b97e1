"""Hyperband's bracket plan (Li et al., "Hyperband: A Novel Bandit-Based Approach to
Hyperparameter Optimization", JMLR 2018, Algorithm 1), in exact integer arithmetic.

For maximum resource R and halving rate eta: s_max = floor(log_eta R), B = (s_max + 1) R.
Bracket s (s_max down to 0) starts n = ceil(B / R * eta^s / (s + 1)) configurations; rung i
(0..s) runs n_i = floor(n eta^-i) of them with r_i = floor(R eta^(i - s)) resource units each and
keeps the best floor(n_i / eta) for the next rung. Integers throughout, so floor(log_eta R) is
right at exact powers (log(243)/log(3) is 4.999... in floating point).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rung:
    configs: int  # n_i: configurations evaluated at this rung
    resource: int  # r_i: resource units each of them has received when the rung ends


@dataclass(frozen=True)
class Bracket:
    s: int
    rungs: tuple[Rung, ...]

    @property
    def configs(self) -> int:
        return self.rungs[0].configs


def s_max(max_resource: int, eta: int) -> int:
    """floor(log_eta max_resource), without floating point."""
    _check(max_resource, eta)
    s, power = 0, eta
    while power <= max_resource:
        s, power = s + 1, power * eta
    return s


def bracket(max_resource: int, eta: int, s: int) -> Bracket:
    top = s_max(max_resource, eta)
    if not 0 <= s <= top:
        raise ValueError(f"bracket s must be in 0..{top} for R={max_resource}, eta={eta}, got {s}")
    # n = ceil((s_max + 1) * eta^s / (s + 1)), since B / R = s_max + 1.
    n = -(-(top + 1) * eta**s // (s + 1))
    rungs = tuple(Rung(configs=n // eta**i, resource=max_resource * eta**i // eta**s) for i in range(s + 1))
    return Bracket(s, rungs)


def hyperband(max_resource: int, eta: int) -> list[Bracket]:
    """Every bracket, most exploratory (s = s_max) first, as in Algorithm 1."""
    return [bracket(max_resource, eta, s) for s in range(s_max(max_resource, eta), -1, -1)]


def _check(max_resource: int, eta: int) -> None:
    if not isinstance(max_resource, int) or max_resource < 1:
        raise ValueError(f"max_resource must be an integer >= 1, got {max_resource!r}")
    if not isinstance(eta, int) or eta < 2:
        raise ValueError(f"eta must be an integer >= 2, got {eta!r}")
