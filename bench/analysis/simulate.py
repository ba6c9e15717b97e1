"""Runs simulated from a known law, L = E + A / N^alpha + B / D^beta, over an IsoFLOP grid: the ground
truth that the fits are tested and benchmarked against, and a stand-in for a CS336 data file."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bench.analysis.scaling import Parametric

# Hoffmann et al.'s fitted constants (2022, approach 3): a realistic, asymmetric law.
CHINCHILLA = Parametric(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28, objective=0.0, starts=0, grid_points=0)
CS336_BUDGETS = (6e18, 1e19, 3e19, 6e19, 1e20, 3e20, 6e20, 1e21, 3e21)  # 9 budgets x 8 sizes = 72 runs


def isoflop_runs(law: Parametric = CHINCHILLA, budgets=CS336_BUDGETS, sizes: int = 8, spread: float = 16.0,
                 centre: float = 1.0, noise: float = 0.0, seed: int = 0) -> pd.DataFrame:
    """``sizes`` model sizes per budget, log-spaced over a factor ``spread`` around ``centre`` x the
    law's true N_opt (centre != 1: an off-centre grid), D = C / 6N; loss x (1 + noise x a standard normal)."""
    rng = np.random.default_rng(seed)
    rows = []
    for budget in budgets:
        n_opt = law.optimal(budget)[0] * centre
        for n in n_opt * np.geomspace(1 / np.sqrt(spread), np.sqrt(spread), sizes):
            d = budget / (6 * n)
            loss = float(law.loss(n, d)) * (1 + noise * rng.normal())
            rows.append({"budget": float(budget), "n": float(n), "d": float(d), "loss": loss})
    return pd.DataFrame(rows)


def cs336_records(runs: pd.DataFrame) -> list[dict]:
    """The runs in the CS336 assignment-3 JSON layout (integer parameter counts, as the handout's)."""
    return [{"parameters": int(round(r.n)), "compute_budget": float(r.budget), "final_loss": float(r.loss)}
            for r in runs.itertuples()]
