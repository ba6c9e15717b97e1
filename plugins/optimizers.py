"""Built-in optimizers: thin, validated wrappers over torch.optim.

Every optimizer with ``weight_decay`` also takes ``decay_exclude``: parameter roles (see
:mod:`bench.param_roles`: ``bias``, ``norm``, ``embedding``, ``head``, ``vector``) whose
parameters get no weight decay, e.g. ``["bias", "norm", "embedding"]`` as in most LLM recipes.
The default ``[]`` decays everything, exactly as before the option existed.

``muon`` runs ``torch.optim.Muon`` on the hidden weight matrices (role ``matrix``: 2-D weights
that are neither embedding, output head, norm nor bias) and AdamW on everything else, as the
reference recipe does; see :class:`MuonWithAdamW`.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import torch

from bench.components import Component
from bench.hookspecs import hookimpl
from bench.param_roles import ROLES, split_by_role

Params = Iterable[torch.Tensor]
DECAY_EXCLUDABLE = tuple(r for r in ROLES if r != "matrix")


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


def decay_groups(params: Params, weight_decay: float, decay_exclude: Sequence[str]) -> list[Any]:
    """The optimizer's ``params`` argument: one group as before, or (with ``decay_exclude``) a
    decayed group and a ``weight_decay = 0`` group holding the excluded roles."""
    unknown = sorted(set(decay_exclude) - set(DECAY_EXCLUDABLE))
    if unknown:
        raise ValueError(f"decay_exclude has unknown roles {unknown}; choose from {list(DECAY_EXCLUDABLE)}")
    params = list(params)
    if not decay_exclude:
        return params
    excluded, decayed = split_by_role(params, decay_exclude, "decay_exclude")
    groups = [{"params": decayed, "weight_decay": weight_decay}, {"params": excluded, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def _betas(betas: Sequence[float]) -> tuple[float, float]:
    values = tuple(float(b) for b in betas)
    if len(values) != 2:
        raise ValueError(f"betas must be two numbers, got {list(values)}")
    return values[0], values[1]


def sgd(params: Params, *, lr: float, device_type: str, weight_decay: float = 0.0,
        decay_exclude: Sequence[str] = ()) -> torch.optim.Optimizer:
    _check(lr, weight_decay)
    return torch.optim.SGD(decay_groups(params, weight_decay, decay_exclude), lr=lr, weight_decay=weight_decay,
                           **_implementation_flags(device_type))


def momentum(params: Params, *, lr: float, device_type: str, momentum: float = 0.9, weight_decay: float = 0.0,
             nesterov: bool = False, decay_exclude: Sequence[str] = ()) -> torch.optim.Optimizer:
    _check(lr, weight_decay, momentum=momentum)
    return torch.optim.SGD(decay_groups(params, weight_decay, decay_exclude), lr=lr, momentum=momentum,
                           weight_decay=weight_decay, nesterov=nesterov, **_implementation_flags(device_type))


def _adam_family(cls: type[torch.optim.Optimizer], params: Params, lr: float, betas: Sequence[float], eps: float,
                 weight_decay: float, decay_exclude: Sequence[str], **flags: Any) -> torch.optim.Optimizer:
    beta1, beta2 = _betas(betas)
    _check(lr, weight_decay, beta1=beta1, beta2=beta2)
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    return cls(decay_groups(params, weight_decay, decay_exclude), lr=lr, betas=(beta1, beta2), eps=eps,
               weight_decay=weight_decay, **flags)


def adam(params: Params, *, lr: float, device_type: str, betas: Sequence[float] = (0.9, 0.999), eps: float = 1e-8,
         weight_decay: float = 0.0, decay_exclude: Sequence[str] = ()) -> torch.optim.Optimizer:
    # Adam's weight_decay is L2 added to the gradient (coupled), unlike AdamW's.
    return _adam_family(torch.optim.Adam, params, lr, betas, eps, weight_decay, decay_exclude,
                        **_implementation_flags(device_type))


def adamw(params: Params, *, lr: float, device_type: str, betas: Sequence[float] = (0.9, 0.999), eps: float = 1e-8,
          weight_decay: float = 0.01, decay_exclude: Sequence[str] = ()) -> torch.optim.Optimizer:
    return _adam_family(torch.optim.AdamW, params, lr, betas, eps, weight_decay, decay_exclude,
                        **_implementation_flags(device_type))


def nadam(params: Params, *, lr: float, device_type: str, betas: Sequence[float] = (0.9, 0.999), eps: float = 1e-8,
          weight_decay: float = 0.0, momentum_decay: float = 4e-3, decoupled_weight_decay: bool = False,
          decay_exclude: Sequence[str] = ()) -> torch.optim.Optimizer:
    if momentum_decay < 0:
        raise ValueError(f"momentum_decay must be >= 0, got {momentum_decay}")
    # NAdam and RAdam have no fused kernels; foreach is their fast path on every device.
    return _adam_family(torch.optim.NAdam, params, lr, betas, eps, weight_decay, decay_exclude, foreach=True,
                        momentum_decay=momentum_decay, decoupled_weight_decay=decoupled_weight_decay)


def radam(params: Params, *, lr: float, device_type: str, betas: Sequence[float] = (0.9, 0.999), eps: float = 1e-8,
          weight_decay: float = 0.0, decoupled_weight_decay: bool = False,
          decay_exclude: Sequence[str] = ()) -> torch.optim.Optimizer:
    return _adam_family(torch.optim.RAdam, params, lr, betas, eps, weight_decay, decay_exclude, foreach=True,
                        decoupled_weight_decay=decoupled_weight_decay)


def adafactor(params: Params, *, lr: float, device_type: str, beta2_decay: float = -0.8, eps: float = 1e-3,
              d: float = 1.0, weight_decay: float = 0.0, decay_exclude: Sequence[str] = ()) -> torch.optim.Optimizer:
    # torch's Adafactor: factored second moments, no first moment, update clipped to RMS d,
    # decoupled weight decay; eps is its eps2 (the relative-step floor), eps1 stays torch's default.
    _check(lr, weight_decay)
    if not beta2_decay <= 0:
        raise ValueError(f"beta2_decay must be <= 0, got {beta2_decay}")
    if not (eps > 0 and d > 0):
        raise ValueError(f"eps and d must be > 0, got eps={eps}, d={d}")
    return torch.optim.Adafactor(decay_groups(params, weight_decay, decay_exclude), lr=lr, beta2_decay=beta2_decay,
                                 eps=(None, eps), d=d, weight_decay=weight_decay, foreach=True)


class MuonWithAdamW(torch.optim.Optimizer):
    """``torch.optim.Muon`` on the hidden weight matrices, ``torch.optim.AdamW`` on the rest, as one
    Optimizer: the trainer sets ``lr`` on :attr:`param_groups` (the two inner optimizers' group
    dicts themselves, Muon's first), steps, zero-grads and checkpoints it like any other."""

    def __init__(self, muon: torch.optim.Optimizer | None, adamw: torch.optim.Optimizer | None):
        self.parts = [part for part in (muon, adamw) if part is not None]
        every = [p for part in self.parts for group in part.param_groups for p in group["params"]]
        super().__init__(every, {})
        self.param_groups = [group for part in self.parts for group in part.param_groups]

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for part in self.parts:
            part.step()
        return loss

    def state_dict(self) -> dict[str, Any]:
        return {"parts": [part.state_dict() for part in self.parts]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        parts = state_dict.get("parts", [])
        if len(parts) != len(self.parts):
            raise ValueError(f"muon state has {len(parts)} parts, this optimizer {len(self.parts)}")
        for part, state in zip(self.parts, parts):
            part.load_state_dict(state)


def muon(params: Params, *, lr: float, device_type: str, momentum: float = 0.95, nesterov: bool = True,
         ns_steps: int = 5, adjust_lr_fn: str = "match_rms_adamw", weight_decay: float = 0.01,
         betas: Sequence[float] = (0.9, 0.95), eps: float = 1e-8,
         decay_exclude: Sequence[str] = ()) -> torch.optim.Optimizer:
    # "match_rms_adamw" scales Muon's orthogonalised update to AdamW's typical RMS (0.2 sqrt(max(A, B))),
    # so the one lr the trainer and its schedule set on every group suits both halves.
    _check(lr, weight_decay, momentum=momentum)
    if adjust_lr_fn not in ("original", "match_rms_adamw"):
        raise ValueError(f"adjust_lr_fn must be 'original' or 'match_rms_adamw', got {adjust_lr_fn!r}")
    params = list(params)
    matrices, others = split_by_role(params, ["matrix"], "muon")
    matrices, others = [p for p in matrices if p.ndim == 2], others + [p for p in matrices if p.ndim != 2]
    inner_muon = torch.optim.Muon(matrices, lr=lr, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps,
                                  weight_decay=weight_decay, adjust_lr_fn=adjust_lr_fn) if matrices else None
    inner_adamw = _adam_family(torch.optim.AdamW, others, lr, betas, eps, weight_decay, decay_exclude,
                               **_implementation_flags(device_type)) if others else None
    return MuonWithAdamW(inner_muon, inner_adamw)


_BETAS = {"betas": [0.9, 0.999], "eps": 1e-8}
_DECAY = {"weight_decay": 0.0, "decay_exclude": []}


@hookimpl
def bench_optimizers() -> list[Component]:
    return [
        Component("sgd", sgd, dict(_DECAY), "plain stochastic gradient descent"),
        Component("momentum", momentum, {"momentum": 0.9, "nesterov": False, **_DECAY},
                  "SGD with (heavy-ball or Nesterov) momentum"),
        Component("adam", adam, {**_BETAS, **_DECAY}, "Adam; weight decay is coupled L2"),
        Component("adamw", adamw, {**_BETAS, **_DECAY, "weight_decay": 0.01}, "AdamW; decoupled weight decay"),
        Component("nadam", nadam, {**_BETAS, **_DECAY, "momentum_decay": 4e-3, "decoupled_weight_decay": False},
                  "Adam with Nesterov momentum (torch.optim.NAdam)"),
        Component("radam", radam, {**_BETAS, **_DECAY, "decoupled_weight_decay": False},
                  "rectified Adam: variance-adaptive warmup (torch.optim.RAdam)"),
        Component("adafactor", adafactor, {"beta2_decay": -0.8, "eps": 1e-3, "d": 1.0, **_DECAY},
                  "Adafactor: factored second moments, no momentum (torch.optim.Adafactor)"),
        Component("muon", muon, {"momentum": 0.95, "nesterov": True, "ns_steps": 5, "adjust_lr_fn": "match_rms_adamw",
                                 "betas": [0.9, 0.95], "eps": 1e-8, "weight_decay": 0.01, "decay_exclude": []},
                  "Muon on hidden 2-D weight matrices, AdamW on embeddings, head, norms and biases"),
    ]
