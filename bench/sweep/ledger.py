"""A sweep's FLOP ledger: ``[sweep] max_total_flops`` caps the training FLOPs that all of a sweep's
trials together may spend (CS336 assignment 3 gives 2e18 FLOPs of small runs to choose a 1e19 run).

- A trial is charged when it starts, for everything it was asked to do: the steps it is to reach x
  tokens per step x the model's training FLOPs per token (``bench.budget``'s formula, the one that
  sizes FLOP budgets), whatever it ends as (finished, diverged, pruned).
- Charges are per cell. A configuration proposed again is the same cell (same id): once trained it
  is reused and costs nothing; a cell resumed to a later Hyperband rung pays only for the extra steps.
- The ledger lives in the store, not in memory: each charge is written into its trial's record in
  ``sweep.db`` before the cell starts, and counts once the cell's folder exists (the runner writes
  its config as the cell starts). A killed sweep reads the same ledger back when it resumes; a charge
  whose cell never started is not counted.
- The final reruns over ``final_seeds`` are the search's result, not the search: not charged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from bench.budget import planned_steps
from bench.errors import ConfigError
from bench.store import ResultStore

CHARGE = "ledger_flops"  # trial user attribute: FLOPs its cell is charged for, up to this request
REUSED = "ledger_reused"  # trial user attribute: answered by a cell that was already trained or charged
NOT_STARTED = "not started: FLOP ledger"  # the status a trial that did not fit is reported with


def check_length_known(config: dict[str, Any], where: str) -> None:
    """A trial's cost is charged before it trains, so its length must not depend on the dataset."""
    if not (config.get("max_steps") or config.get("max_tokens") or config.get("max_flops")):
        raise ConfigError(f"{where}: sweep.max_total_flops needs every trial's length known before it starts: give "
                          f"the cells max_steps, max_tokens or max_flops (a count of epochs depends on the dataset)")


def trial_flops(config: dict[str, Any], flops_per_token: float, halt_at_step: int = 0) -> float:
    """Training FLOPs of a trial cell up to ``halt_at_step`` (0: its whole planned length)."""
    check_length_known(config, "sweep")
    _, total = planned_steps(config, 0, int(flops_per_token))
    steps = min(halt_at_step, total) if halt_at_step else total
    return float(steps * config["batch_size"] * config["grad_accum"] * config["seq_len"] * flops_per_token)


@dataclass
class Ledger:
    limit: float
    charged: dict[str, float] = field(default_factory=dict)  # cell id -> FLOPs charged (started cells)
    reused: int = 0  # trials answered by a cell already trained or charged

    @classmethod
    def from_store(cls, limit: float, store: ResultStore, trials: list[dict[str, Any]]) -> Ledger:
        """The charges of every started cell, read back from the trials' records (``trials``: the user
        attributes of every trial of every group, from ``sweep.db``)."""
        charged: dict[str, float] = {}
        for attrs in trials:
            cell, flops = attrs.get("cell_id"), attrs.get(CHARGE)
            if cell and flops is not None and store.cell(cell).read_config() is not None:
                charged[cell] = max(charged.get(cell, 0.0), float(flops))
        return cls(limit, charged, sum(1 for attrs in trials if attrs.get(REUSED)))

    @property
    def spent(self) -> float:
        return sum(self.charged.values())

    @property
    def left(self) -> float:
        return max(0.0, self.limit - self.spent)

    def extra(self, cell_id: str, flops: float) -> float:
        """What starting ``cell_id`` for ``flops`` in all would add: only what it was not charged yet."""
        return max(0.0, flops - self.charged.get(cell_id, 0.0))

    def admit(self, cells: list[tuple[str, float]], tag: Callable[[str, float], None]) -> tuple[list[str], str | None]:
        """Charge the cells (id, FLOPs in all) in order while they fit; ``tag`` writes each charge to the
        store first. Returns the admitted ids and, if one did not fit, the line saying why the sweep stops."""
        admitted: list[str] = []
        for cell_id, flops in cells:
            extra = self.extra(cell_id, flops)
            if extra > self.left:
                return admitted, (f"sweep: FLOP ledger: {self.spent:.3g} of {self.limit:.3g} FLOPs spent, "
                                  f"{self.left:.3g} left; the next trial needs {extra:.3g}, so the search stops here "
                                  f"(raise sweep.max_total_flops and run again to go on)")
            tag(cell_id, flops)
            self.charged[cell_id] = max(self.charged.get(cell_id, 0.0), flops)
            admitted.append(cell_id)
        return admitted, None

    def line(self) -> str:
        reused = f"; {self.reused} repeated configuration(s) reused at no cost" if self.reused else ""
        return (f"sweep: FLOP ledger: {self.spent:.3g} of {self.limit:.3g} FLOPs spent on {len(self.charged)} trial "
                f"cell(s), {self.left:.3g} left{reused}")
