"""Lion, from the update rule of Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"
(Algorithm 2). For gradient g, momentum m, parameters theta, learning rate lr, weight decay wd::

    c      = beta1 * m + (1 - beta1) * g            # interpolate momentum and gradient
    theta  = theta - lr * (sign(c) + wd * theta)     # sign update, decoupled weight decay
    m      = beta2 * m + (1 - beta2) * g             # then update the momentum

Every coordinate moves by exactly lr (plus decay), so Lion wants a learning rate 3-10x smaller
than AdamW's and a weight decay as much larger (the paper's advice).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import torch


class Lion(torch.optim.Optimizer):
    def __init__(self, params: Iterable[Any], lr: float, betas: tuple[float, float] = (0.9, 0.99),
                 weight_decay: float = 0.0):
        super().__init__(params, {"lr": lr, "betas": betas, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, (beta1, beta2), wd = group["lr"], group["betas"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                m = state["exp_avg"]
                c = m.mul(beta1).add_(p.grad, alpha=1 - beta1)
                p.mul_(1 - lr * wd).add_(c.sign_(), alpha=-lr)
                m.mul_(beta2).add_(p.grad, alpha=1 - beta2)
        return loss


def lion(params: Iterable[Any], *, lr: float, device_type: str, betas: Sequence[float] = (0.9, 0.99),
         weight_decay: float = 0.0) -> Lion:
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}; Lion usually wants 3-10x less than AdamW")
    if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
        raise ValueError(f"betas must be two numbers in [0, 1), got {list(betas)}")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    return Lion(params, lr, (float(betas[0]), float(betas[1])), weight_decay)
