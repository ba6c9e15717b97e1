"""How many steps a cell trains, and which budget ends it.

FLOP and token budgets fix the number of steps before training: a step trains on
``tokens_per_step = batch_size x grad_accum x seq_len`` tokens and costs
``flops_per_token x tokens_per_step`` FLOPs (the model's own analytic estimate), so
``steps = floor(budget / per-step amount)``. Time and cost budgets cannot be known in advance:
the loop stops after the first step at which training time (evaluation and checkpoint writing
excluded) reaches ``max_time`` seconds, or ``hours x cost_per_hour`` reaches ``max_cost``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

BUDGET_KEYS = ("max_flops", "max_tokens", "max_time", "max_cost")


@dataclass(frozen=True)
class StepPlan:
    tokens_per_step: int
    steps_per_epoch: int
    total_steps: int
    flops_per_token: int
    max_time: float  # seconds of training; 0 = none
    max_cost: float  # dollars; 0 = none
    cost_per_hour: float

    def cost(self, train_seconds: float) -> float:
        return train_seconds / 3600.0 * self.cost_per_hour

    def exhausted(self, train_seconds: float) -> str | None:
        """The budget that training time ``train_seconds`` has used up, if any."""
        if self.max_time and train_seconds >= self.max_time:
            return "max_time"
        if self.max_cost and self.cost(train_seconds) >= self.max_cost:
            return "max_cost"
        return None


def planned_steps(config: dict[str, Any], train_tokens: int, flops_per_token: int) -> tuple[int, int]:
    """``(steps_per_epoch, total_steps)`` for a cell whose train split has ``train_tokens`` tokens."""
    tokens_per_step = config["batch_size"] * config["grad_accum"] * config["seq_len"]
    steps_per_epoch = config["steps_per_epoch"] or max(1, train_tokens // tokens_per_step)
    total = config["max_steps"] or config["epochs"] * steps_per_epoch
    if config["max_tokens"]:
        total = config["max_tokens"] // tokens_per_step
    if config["max_flops"]:
        by_flops = int(config["max_flops"] // (flops_per_token * tokens_per_step))
        total = min(total, by_flops) if config["max_tokens"] else by_flops
    return steps_per_epoch, total


def zero_step_problem(config: dict[str, Any], flops_per_token: int) -> str | None:
    """Why a FLOP or token budget leaves no step to train, with the smallest budget that does."""
    tokens_per_step = config["batch_size"] * config["grad_accum"] * config["seq_len"]
    if config["max_tokens"] and config["max_tokens"] < tokens_per_step:
        return (f"max_tokens = {config['max_tokens']} is less than one step's {tokens_per_step} tokens "
                f"(batch_size x grad_accum x seq_len); raise it to at least {tokens_per_step}")
    step_flops = flops_per_token * tokens_per_step
    if config["max_flops"] and config["max_flops"] < step_flops:
        return (f"max_flops = {config['max_flops']:.3g} is less than one step's {step_flops:.3g} FLOPs "
                f"for this model; raise it to at least {step_flops:.3g} or shrink the model")
    return None


def make_plan(config: dict[str, Any], train_tokens: int, flops_per_token: int) -> StepPlan:
    steps_per_epoch, total = planned_steps(config, train_tokens, flops_per_token)
    return StepPlan(tokens_per_step=config["batch_size"] * config["grad_accum"] * config["seq_len"],
                    steps_per_epoch=steps_per_epoch, total_steps=total, flops_per_token=flops_per_token,
                    max_time=config["max_time"], max_cost=config["max_cost"],
                    cost_per_hour=config["cost_per_hour"])


def budget_record(config: dict[str, Any], plan: StepPlan, steps: int, train_seconds: float,
                  stopped_by: str | None) -> dict[str, Any]:
    """The summary's ``budget`` (what was asked), ``budget_used`` and ``stopped_by``."""
    tokens = steps * plan.tokens_per_step
    return {
        "budget": {key: config[key] for key in BUDGET_KEYS if config[key]} or None,
        "budget_used": {"steps": steps, "tokens": tokens, "flops": tokens * plan.flops_per_token,
                        "time_s": train_seconds, "cost": plan.cost(train_seconds),
                        "cost_per_hour": plan.cost_per_hour},
        "stopped_by": stopped_by,
    }


def train_split_tokens(config: dict[str, Any], registry: Any, cache: dict) -> int:
    """Tokens in the cell's train split, read only when the step count depends on it (no max_steps,
    steps_per_epoch or token/FLOP budget); tokenized splits come from the token cache."""
    if config["max_steps"] or config["steps_per_epoch"] or config["max_tokens"] or config["max_flops"]:
        return 0
    import torch  # the data stack only when the split must be read

    from bench.data.loading import load_cell_data

    dataset = registry.get("dataset", config["dataset"])
    key = (dataset.name, repr(sorted(dataset.params(config).items())), config["tokenizer"])
    if key not in cache:
        cache[key] = int(load_cell_data(config, registry, torch.device("cpu")).splits["train"].numel())
    return cache[key]
