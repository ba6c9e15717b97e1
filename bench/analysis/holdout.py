"""Leave-one-budget-out extrapolation: how well a scaling law predicts a budget it never saw.

Each budget in turn is held out, every law is refitted on the others, and its prediction at the
held-out budget is compared with what that budget's own cells say: N_opt by the same IsoFLOP
method (parabola vertex or best cell), and for approach 3 also the loss of every held-out cell at
its own (N, D). Holding out the largest budget is the honest test of extrapolation, the use a
scaling law is fitted for; the other budgets test interpolation as well.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bench.analysis import approach3, scaling
from bench.errors import BenchError

LOO_GRID_STEP = 0.1  # approach 3 refits: a coarse exponent grid (400 pairs), L-BFGS-B finishes the search


@dataclass(frozen=True)
class HeldOut:
    budget: float
    largest: bool
    observed: dict[str, float]  # method -> the held-out budget's own N_opt
    predicted: dict[str, float]  # law ("vertex", "min", "approach3") -> N_opt predicted at the budget
    loss_error: float  # approach 3: mean |predicted / observed - 1| over the held-out cells (NaN if not fitted)

    def n_error(self, law: str) -> float:
        """Predicted / observed N_opt - 1; approach 3 is compared with the budget's parabola vertex."""
        observed = self.observed["min" if law == "min" else "vertex"]
        return self.predicted.get(law, math.nan) / observed - 1


def leave_one_budget_out(frame: pd.DataFrame, methods: tuple[str, ...] = scaling.METHODS,
                         parametric: bool = True) -> list[HeldOut]:
    """One row per budget (needs four budgets: three stay to fit a line through)."""
    budgets = sorted(frame["budget"].unique())
    if len(budgets) < 4:
        raise BenchError(f"leave-one-budget-out needs at least four budgets (three to refit on), got {len(budgets)}")
    rows = []
    for budget in budgets:
        held, rest = frame[frame["budget"] == budget], frame[frame["budget"] != budget]
        observed = {"vertex": scaling.budget_optimum(held["n"], held["loss"]).x_opt,
                    "min": scaling.best_cell(held["n"], held["loss"]).x_opt}
        predicted = {m: float(scaling.isoflop_fit(rest, n_boot=0, method=m).n_law(budget)) for m in methods}
        loss_error = math.nan
        if parametric:
            try:
                law = approach3.fit(rest["n"], rest["d"], rest["loss"], step=LOO_GRID_STEP).law
            except BenchError:
                law = None
            if law is not None:
                predicted["approach3"] = law.optimal(budget)[0]
                loss_error = float(np.mean(np.abs(law.loss(held["n"], held["d"]) / held["loss"] - 1)))
        rows.append(HeldOut(float(budget), budget == budgets[-1], observed, predicted, loss_error))
    return rows
