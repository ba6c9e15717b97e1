"""Speedup against a reference optimizer by effective data (Marin, "Fantastic Pretraining Optimizers").

Fit the reference's final loss against its training tokens, L(D) = E + B / D^beta
(``scipy.optimize.curve_fit``), from its own runs at several budgets. For another configuration
that reached loss L with D tokens, D_eff = (B / (L - E))^(1 / beta) is the data the reference
would need for the same loss, and the speedup is D_eff / D (> 1: fewer tokens than the reference).
A loss at or below the fitted E is out of the reference's reach: its speedup is infinite.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import curve_fit

MIN_POINTS = 4  # three parameters and at least one degree of freedom left over


@dataclass(frozen=True)
class DataLaw:
    E: float
    B: float
    beta: float
    points: int
    rmse: float
    low: float = 0.0  # the fitted token range: D_eff outside it is an extrapolation
    high: float = math.inf

    def within(self, tokens: float) -> bool:
        return self.low <= tokens <= self.high

    def loss(self, tokens) -> np.ndarray:
        return self.E + self.B / np.power(np.asarray(tokens, dtype=float), self.beta)

    def effective_tokens(self, loss: float) -> float:
        if not math.isfinite(loss):
            return math.nan
        if loss <= self.E:
            return math.inf
        return float((self.B / (loss - self.E)) ** (1.0 / self.beta))

    def describe(self) -> str:
        return (f"L(D) = {self.E:.4g} + {self.B:.4g} / D^{self.beta:.3g} ({self.points} points over "
                f"{self.low:.3g}-{self.high:.3g} tokens, rmse {self.rmse:.3g})")


class TooFewPoints(ValueError):
    """The reference has fewer distinct budgets than the law has parameters plus one."""


def fit_data_law(tokens, losses) -> DataLaw:
    """Least-squares fit of L(D) = E + B / D^beta; D is scaled by its largest value for conditioning."""
    D, L = np.asarray(tokens, dtype=float), np.asarray(losses, dtype=float)
    keep = np.isfinite(D) & np.isfinite(L) & (D > 0)
    D, L = D[keep], L[keep]
    if len(np.unique(D)) < MIN_POINTS:
        raise TooFewPoints(f"{len(np.unique(D))} distinct budgets; the fit of E + B / D^beta needs at least "
                           f"{MIN_POINTS}")
    scale = float(D.max())
    x = D / scale

    def law(x, E, b, beta):
        return E + b / np.power(x, beta)

    start = (float(L.min()) * 0.9, float(L.max() - L.min()) or 1e-3, 0.5)
    (E, b, beta), _ = curve_fit(law, x, L, p0=start, bounds=([0.0, 0.0, 1e-3], [np.inf, np.inf, 5.0]),
                                maxfev=20000)
    rmse = float(np.sqrt(np.mean((law(x, E, b, beta) - L) ** 2)))
    # b / (D / scale)^beta = (b * scale^beta) / D^beta
    return DataLaw(float(E), float(b * scale**beta), float(beta), len(D), rmse, float(D.min()), float(D.max()))


def speedup(law: DataLaw, loss: float, tokens: float) -> float:
    return law.effective_tokens(loss) / tokens if tokens > 0 else math.nan
