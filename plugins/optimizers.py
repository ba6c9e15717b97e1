"""Built-in optimizers: thin, validated wrappers over torch.optim."""

from __future__ import annotations

import torch

from bench.components import Component
from bench.hookspecs import hookimpl


def _implementation_flags(device_type: str) -> dict[str, bool]:
    # The fused kernels exist for accelerators only; on CPU the multi-tensor (foreach) path
    # is the fast one.
    return {"fused": True} if device_type == "cuda" else {"foreach": True}


def _check(lr: float, weight_decay: float, **more: float) -> None:
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}; set a positive learning rate")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    for key, value in more.items():
        if not 0 <= value < 1:
            raise ValueError(f"{key} must be in [0, 1), got {value}")


def sgd(params, *, lr: float, device_type: str, weight_decay: float = 0.0):
    _check(lr, weight_decay)
    return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay, **_implementation_flags(device_type))


def momentum(params, *, lr: float, device_type: str, momentum: float = 0.9,
             weight_decay: float = 0.0, nesterov: bool = False):
    _check(lr, weight_decay, momentum=momentum)
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay,
                           nesterov=nesterov, **_implementation_flags(device_type))


def _adam_family(cls, params, lr, device_type, betas, eps, weight_decay):
    betas = tuple(float(b) for b in betas)
    if len(betas) != 2:
        raise ValueError(f"betas must be two numbers, got {list(betas)}")
    _check(lr, weight_decay, beta1=betas[0], beta2=betas[1])
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    return cls(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
               **_implementation_flags(device_type))


def adam(params, *, lr: float, device_type: str, betas=(0.9, 0.999), eps: float = 1e-8,
         weight_decay: float = 0.0):
    # Adam's weight_decay is L2 added to the gradient (coupled), unlike AdamW's.
    return _adam_family(torch.optim.Adam, params, lr, device_type, betas, eps, weight_decay)


def adamw(params, *, lr: float, device_type: str, betas=(0.9, 0.999), eps: float = 1e-8,
          weight_decay: float = 0.01):
    return _adam_family(torch.optim.AdamW, params, lr, device_type, betas, eps, weight_decay)


@hookimpl
def bench_optimizers():
    return [
        Component("sgd", sgd, {"weight_decay": 0.0}, "plain stochastic gradient descent"),
        Component("momentum", momentum, {"momentum": 0.9, "weight_decay": 0.0, "nesterov": False},
                  "SGD with (heavy-ball or Nesterov) momentum"),
        Component("adam", adam, {"betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0},
                  "Adam; weight decay is coupled L2"),
        Component("adamw", adamw, {"betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.01},
                  "AdamW; decoupled weight decay"),
    ]
