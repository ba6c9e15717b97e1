"""Optimizers from the 2024-26 optimizer studies, taken from maintained libraries, not re-implemented.

Sources (pinned in ``constraints.txt``; the installed version is printed by ``bench list``):

* ``pytorch-optimizer`` (kozistr, Apache-2.0, tested on every release): Lion, SOAP, Shampoo, Kron
  (PSGD), AdEMAMix, MARS, Prodigy, Adam-mini, Signum (its ``SignSGD`` with momentum), ADOPT;
* ``schedulefree`` (facebookresearch, Apache-2.0, the authors' reference code): Schedule-Free AdamW.

Each factory takes the library's own hyperparameters under the library's names, with the library's
(= the paper's, where the paper gives one) defaults, plus bench's ``decay_exclude`` (see
:mod:`bench_plugins.optimizers`). An optimizer whose library default learning rate is part of the
method (Prodigy's ``lr = 1``, Schedule-Free's 2.5e-3, ...) declares it as its ``lr`` default; a
matrix that sets ``lr`` overrides it.

Left out: Sophia. Its Hessian estimate needs either ``loss.backward(create_graph=True)``
(Sophia-H, Hutchinson) or an extra forward/backward pass on labels sampled from the model every
k steps (Sophia-G, the paper's main variant). bench's optimizer contract hands an optimizer first-order
gradients only, so either would need a second training loop; see docs/guide/optimizers-and-models.md.
The library's ScalableShampoo (Anil et al.'s distributed Shampoo) keeps Python objects in its state, which
bench's weights-only checkpoint loading refuses, so ``shampoo`` is Gupta et al.'s original.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Any, Sequence

import schedulefree
import torch
from torch import nn

from bench.components import Component
from bench.hookspecs import hookimpl
from bench.param_roles import role_of
from bench_plugins.optimizers import Params, _betas, _check, decay_groups

# The distributions whose code computes these optimizers' results: recorded with each cell, so that
# upgrading one marks the cells it computed stale (Component.depends_on, bench.provenance).
PO_DIST, SF_DIST = "pytorch-optimizer", "schedulefree"
PO = f"{PO_DIST} {version(PO_DIST)}"
SF = f"{SF_DIST} {version(SF_DIST)}"


def _po() -> Any:
    """pytorch_optimizer, imported when a cell builds one of its optimizers: importing it pulls in
    transformers (~0.6 s), which every bench process and worker paid at plugin loading otherwise."""
    import pytorch_optimizer

    return pytorch_optimizer


def _triple(betas: Sequence[float]) -> tuple[float, float, float]:
    values = tuple(float(b) for b in betas)
    if len(values) != 3 or not all(0 <= b < 1 for b in values):
        raise ValueError(f"betas must be three numbers in [0, 1), got {list(values)}")
    return values[0], values[1], values[2]


def _positive(**values: float) -> None:
    for key, value in values.items():
        if not value > 0:
            raise ValueError(f"{key} must be > 0, got {value}")


def lion(params: Params, *, lr: float, device_type: str, betas: Sequence[float] = (0.9, 0.99),
         weight_decay: float = 0.0, decay_exclude: Sequence[str] = ()) -> torch.optim.Optimizer:
    beta1, beta2 = _betas(betas)
    _check(lr, weight_decay, beta1=beta1, beta2=beta2)
    return _po().Lion(decay_groups(params, weight_decay, decay_exclude), lr=lr, betas=(beta1, beta2),
                      weight_decay=weight_decay, weight_decouple=True)


def signum(params: Params, *, lr: float, device_type: str, momentum: float = 0.9, weight_decay: float = 0.0,
           decay_exclude: Sequence[str] = ()) -> torch.optim.Optimizer:
    _check(lr, weight_decay, momentum=momentum)
    return _po().SignSGD(decay_groups(params, weight_decay, decay_exclude), lr=lr, momentum=momentum,
                         weight_decay=weight_decay, weight_decouple=True)


def soap(params: Params, *, lr: float, device_type: str, betas: Sequence[float] = (0.95, 0.95),
         shampoo_beta: float = -1.0, eps: float = 1e-8, weight_decay: float = 0.01, precondition_frequency: int = 10,
         max_precondition_dim: int = 10000, precondition_1d: bool = False,
         decay_exclude: Sequence[str] = ()) -> torch.optim.Optimizer:
    # shampoo_beta < 0 means "use beta2", the library's None (TOML has no null).
    beta1, beta2 = _betas(betas)
    _check(lr, weight_decay, beta1=beta1, beta2=beta2)
    _positive(eps=eps, precondition_frequency=precondition_frequency, max_precondition_dim=max_precondition_dim)
    return _po().SOAP(decay_groups(params, weight_decay, decay_exclude), lr=lr, betas=(beta1, beta2),
                      shampoo_beta=None if shampoo_beta < 0 else shampoo_beta, eps=eps, weight_decay=weight_decay,
                      precondition_frequency=precondition_frequency, max_precondition_dim=max_precondition_dim,
                      precondition_1d=precondition_1d)


def shampoo(params: Params, *, lr: float, device_type: str, momentum: float = 0.0, weight_decay: float = 0.0,
            preconditioning_compute_steps: int = 1, matrix_eps: float = 1e-6,
            decay_exclude: Sequence[str] = ()) -> torch.optim.Optimizer:
    # Shampoo as published: a Kronecker-factored preconditioner per tensor dimension, inverse roots
    # recomputed every preconditioning_compute_steps steps (matrix cost: keep it for small models).
    _check(lr, weight_decay, momentum=momentum)
    _positive(preconditioning_compute_steps=preconditioning_compute_steps, matrix_eps=matrix_eps)
    return _po().Shampoo(decay_groups(params, weight_decay, decay_exclude), lr=lr, momentum=momentum,
                         weight_decay=weight_decay, weight_decouple=True,
                         preconditioning_compute_steps=preconditioning_compute_steps, matrix_eps=matrix_eps)


def ademamix(params: Params, *, lr: float, device_type: str, betas: Sequence[float] = (0.9, 0.999, 0.9999),
             ademamix_alpha: float = 5.0, t_alpha_beta3: int = 0, eps: float = 1e-8, weight_decay: float = 0.0,
             decay_exclude: Sequence[str] = ()) -> torch.optim.Optimizer:
    # ademamix_alpha is the paper's alpha (the library's ``alpha``), the weight of the slow EMA; the
    # key is prefixed because a cell has one value per key and the synthetic dataset's `alpha` means
    # something else. t_alpha_beta3 = 0: no warmup of alpha and beta3 (the library's None); the paper
    # warms both up over the whole run, so set it to the cell's step count to follow the paper.
    beta1, beta2, beta3 = _triple(betas)
    _check(lr, weight_decay)
    _positive(eps=eps)
    if ademamix_alpha < 0 or t_alpha_beta3 < 0:
        raise ValueError(f"ademamix_alpha and t_alpha_beta3 must be >= 0, got ademamix_alpha={ademamix_alpha}, "
                         f"t_alpha_beta3={t_alpha_beta3}")
    return _po().AdEMAMix(decay_groups(params, weight_decay, decay_exclude), lr=lr, betas=(beta1, beta2, beta3),
                          alpha=ademamix_alpha, t_alpha_beta3=t_alpha_beta3 or None, eps=eps, weight_decay=weight_decay,
                          weight_decouple=True)


def mars(params: Params, *, lr: float, device_type: str, betas: Sequence[float] = (0.95, 0.99), gamma: float = 0.025,
         mars_type: str = "adamw", optimize_1d: bool = False, lr_1d: float = 3e-3,
         betas_1d: Sequence[float] = (0.9, 0.95), weight_decay: float = 0.0, weight_decay_1d: float = 0.1,
         eps: float = 1e-8, decay_exclude: Sequence[str] = ()) -> torch.optim.Optimizer:
    # Without optimize_1d, 1-D parameters take AdamW at lr * lr_1d / lr: they follow the schedule too.
    beta1, beta2 = _betas(betas)
    _check(lr, weight_decay, beta1=beta1, beta2=beta2)
    _positive(lr_1d=lr_1d, eps=eps)
    if mars_type not in ("adamw", "lion", "shampoo"):
        raise ValueError(f"mars_type must be 'adamw', 'lion' or 'shampoo', got {mars_type!r}")
    return _po().MARS(decay_groups(params, weight_decay, decay_exclude), lr=lr, betas=(beta1, beta2), gamma=gamma,
                      mars_type=mars_type, optimize_1d=optimize_1d, lr_1d=lr_1d, betas_1d=_betas(betas_1d),
                      weight_decay=weight_decay, weight_decay_1d=weight_decay_1d, eps=eps)


def prodigy(params: Params, *, lr: float, device_type: str, betas: Sequence[float] = (0.9, 0.999),
            d0: float = 1e-6, d_coef: float = 1.0, weight_decay: float = 0.0, bias_correction: bool = False,
            safeguard_warmup: bool = False, eps: float = 1e-8,
            decay_exclude: Sequence[str] = ()) -> torch.optim.Optimizer:
    # lr multiplies the step size Prodigy estimates (d): 1.0 is the method, a schedule scales it.
    beta1, beta2 = _betas(betas)
    _check(lr, weight_decay, beta1=beta1, beta2=beta2)
    _positive(d0=d0, d_coef=d_coef, eps=eps)
    return _po().Prodigy(decay_groups(params, weight_decay, decay_exclude), lr=lr, betas=(beta1, beta2), d0=d0,
                         d_coef=d_coef, weight_decay=weight_decay, bias_correction=bias_correction,
                         safeguard_warmup=safeguard_warmup, eps=eps)


def adopt(params: Params, *, lr: float, device_type: str, betas: Sequence[float] = (0.9, 0.9999), eps: float = 1e-6,
          weight_decay: float = 0.0, decay_exclude: Sequence[str] = ()) -> torch.optim.Optimizer:
    # Decoupled weight decay (AdamW-style), as the ADOPT paper's language-model runs use.
    beta1, beta2 = _betas(betas)
    _check(lr, weight_decay, beta1=beta1, beta2=beta2)
    _positive(eps=eps)
    return _po().ADOPT(decay_groups(params, weight_decay, decay_exclude), lr=lr, betas=(beta1, beta2), eps=eps,
                       weight_decay=weight_decay, weight_decouple=True)


def kron(params: Params, *, lr: float, device_type: str, momentum: float = 0.9, weight_decay: float = 0.0,
         pre_conditioner_update_probability: float = -1.0, max_size_triangular: int = 8192,
         min_ndim_triangular: int = 2, memory_save_mode: str = "", balance_prob: float = 0.01,
         decay_exclude: Sequence[str] = ()) -> torch.optim.Optimizer:
    # pre_conditioner_update_probability < 0: the library's schedule (every step for 500 steps, then
    # decaying to 3 %); memory_save_mode "": full preconditioners (the library's None).
    _check(lr, weight_decay, momentum=momentum)
    if pre_conditioner_update_probability > 1:
        raise ValueError(f"pre_conditioner_update_probability must be <= 1 (< 0: the library's schedule), "
                         f"got {pre_conditioner_update_probability}")
    if memory_save_mode not in ("", "one_diag", "smart_one_diag", "all_diag"):
        raise ValueError(f"memory_save_mode must be '', 'one_diag', 'smart_one_diag' or 'all_diag', "
                         f"got {memory_save_mode!r}")
    _positive(max_size_triangular=max_size_triangular, min_ndim_triangular=min_ndim_triangular)
    if not 0 <= balance_prob <= 1:
        raise ValueError(f"balance_prob must be in [0, 1], got {balance_prob}")
    probability = None if pre_conditioner_update_probability < 0 else pre_conditioner_update_probability
    from bench_plugins.library_kron import Kron

    return Kron(decay_groups(params, weight_decay, decay_exclude), lr=lr, momentum=momentum, weight_decay=weight_decay,
                weight_decouple=True, pre_conditioner_update_probability=probability,
                max_size_triangular=max_size_triangular, min_ndim_triangular=min_ndim_triangular,
                memory_save_mode=memory_save_mode or None, balance_prob=balance_prob)


class _RoleNamed(nn.Module):
    """Parameters under names that Adam-mini's name-based partition reads: ``embed_*`` for the token
    table and the output head (Adam's per-coordinate second moment, as in the paper), ``norm_*`` for
    norms (no weight decay), the role otherwise (one second moment per tensor)."""

    def __init__(self, params: list[torch.Tensor]):
        super().__init__()
        for i, param in enumerate(params):
            role = role_of(param) or "matrix"
            prefix = "embed" if role in ("embedding", "head") else role
            self.register_parameter(f"{prefix}_{i}", param)


def adam_mini(params: Params, *, lr: float, device_type: str, betas: Sequence[float] = (0.9, 0.999),
              eps: float = 1e-8, weight_decay: float = 0.1,
              decay_exclude: Sequence[str] = ()) -> torch.optim.Optimizer:
    beta1, beta2 = _betas(betas)
    _check(lr, weight_decay, beta1=beta1, beta2=beta2)
    _positive(eps=eps)
    plain = [p for item in params for p in (item["params"] if isinstance(item, dict) else [item])]
    decay_groups(plain, weight_decay, decay_exclude)  # validates decay_exclude (and that roles are tagged)
    # num_embeds/num_heads only size the query/key head split, which needs parameter names bench does not
    # pass (a fused qkv matrix has none): q and k get one second moment per tensor like other matrices.
    opt = _po().AdamMini(_RoleNamed(plain), lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay,
                         num_embeds=1, num_heads=1)
    excluded = set(decay_exclude)
    for group in opt.param_groups:
        if excluded and all(role_of(p) in excluded for p in group["params"]):
            group["weight_decay"] = 0.0
    return opt


class ScheduleFreeAdamW(schedulefree.AdamWScheduleFree):
    """The library's Schedule-Free AdamW, with an eval/train round trip that is bitwise the identity.

    The library's ``train()`` recomputes the training point y from the average x and z by a lerp,
    which is not exact in floating point, so every evaluation or checkpoint would nudge training in
    the last bits, and a run halted and continued (a sweep's promotion) would leave the path of an
    uninterrupted one. ``eval()`` here keeps y in the optimizer state (so a checkpoint holds it too)
    and ``train()`` puts it back; the update rule itself is the library's.
    """

    @torch.no_grad()
    def eval(self) -> None:
        for group in self.param_groups:
            if group["train_mode"]:
                for p in group["params"]:
                    if "z" in self.state[p]:
                        self.state[p]["y"] = p.detach().clone()
        super().eval()

    @torch.no_grad()
    def train(self) -> None:
        super().train()
        for group in self.param_groups:
            for p in group["params"]:
                y = self.state[p].pop("y", None)
                if y is not None:
                    p.copy_(y)


def schedulefree_adamw(params: Params, *, lr: float, device_type: str, betas: Sequence[float] = (0.9, 0.999),
                       eps: float = 1e-8, weight_decay: float = 0.0, schedulefree_warmup_steps: int = 0,
                       r: float = 0.0, weight_lr_power: float = 2.0,
                       decay_exclude: Sequence[str] = ()) -> torch.optim.Optimizer:
    # Schedule-Free replaces the schedule: use bench's `constant` schedule, warmed up by the schedule's
    # warmup_steps or by this one (the library's warmup_steps, prefixed so that a matrix's
    # warmup_steps does not warm the run up twice, once in the schedule and once in here).
    # It keeps two weight sequences, so it declares train()/eval(): see "Optimizer modes" in
    # bench.hookspecs; bench evaluates and checkpoints the averaged weights.
    beta1, beta2 = _betas(betas)
    _check(lr, weight_decay, beta1=beta1, beta2=beta2)
    _positive(eps=eps)
    if schedulefree_warmup_steps < 0:
        raise ValueError(f"schedulefree_warmup_steps must be >= 0, got {schedulefree_warmup_steps}")
    return ScheduleFreeAdamW(decay_groups(params, weight_decay, decay_exclude), lr=lr, betas=(beta1, beta2), eps=eps,
                             weight_decay=weight_decay, warmup_steps=schedulefree_warmup_steps, r=r,
                             weight_lr_power=weight_lr_power, foreach=True)


_EXCLUDE: dict[str, Any] = {"decay_exclude": []}


def _component(name: str, factory: Any, defaults: dict[str, Any], what: str, source: str, paper: str) -> Component:
    schedule_free = source.startswith(SF_DIST)
    return Component(name, factory, {**defaults, **_EXCLUDE}, f"{what} [{source}; {paper}]",
                     # "schedule-free": bench warns when a decaying schedule is put on top (bench.schedule_free)
                     tags={"schedule-free"} if schedule_free else (),
                     depends_on=(SF_DIST if schedule_free else PO_DIST,))


@hookimpl
def bench_optimizers() -> list[Component]:
    return [
        _component("lion", lion, {"lr": 1e-4, "betas": [0.9, 0.99], "weight_decay": 0.0},
                   "Lion: sign of interpolated momentum", f"{PO} Lion",
                   "Chen et al. 2023, arXiv:2302.06675"),
        _component("signum", signum, {"lr": 1e-3, "momentum": 0.9, "weight_decay": 0.0},
                   "Signum: sign of the momentum", f"{PO} SignSGD",
                   "Bernstein et al. 2018, arXiv:1802.04434"),
        _component("soap", soap, {"lr": 3e-3, "betas": [0.95, 0.95], "shampoo_beta": -1.0, "eps": 1e-8,
                                  "weight_decay": 0.01, "precondition_frequency": 10, "max_precondition_dim": 10000,
                                  "precondition_1d": False},
                   "SOAP: Adam in Shampoo's eigenbasis", f"{PO} SOAP",
                   "Vyas et al. 2024, arXiv:2409.11321"),
        _component("shampoo", shampoo, {"lr": 1e-3, "momentum": 0.0, "weight_decay": 0.0,
                                        "preconditioning_compute_steps": 1, "matrix_eps": 1e-6},
                   "Shampoo: Kronecker-factored preconditioner per dimension", f"{PO} Shampoo",
                   "Gupta et al. 2018, arXiv:1802.09568"),
        _component("kron", kron, {"lr": 1e-3, "momentum": 0.9, "weight_decay": 0.0,
                                  "pre_conditioner_update_probability": -1.0, "max_size_triangular": 8192,
                                  "min_ndim_triangular": 2, "memory_save_mode": "", "balance_prob": 0.01},
                   "Kron: PSGD with Kronecker-factored preconditioners", f"{PO} Kron",
                   "Li 2019, arXiv:1809.10232"),
        _component("ademamix", ademamix, {"lr": 1e-3, "betas": [0.9, 0.999, 0.9999], "ademamix_alpha": 5.0,
                                          "t_alpha_beta3": 0, "eps": 1e-8, "weight_decay": 0.0},
                   "AdEMAMix: Adam plus a slow EMA of gradients", f"{PO} AdEMAMix",
                   "Pagliardini et al. 2024, arXiv:2409.03050"),
        _component("mars", mars, {"lr": 3e-3, "betas": [0.95, 0.99], "gamma": 0.025, "mars_type": "adamw",
                                  "optimize_1d": False, "lr_1d": 3e-3, "betas_1d": [0.9, 0.95], "weight_decay": 0.0,
                                  "weight_decay_1d": 0.1, "eps": 1e-8},
                   "MARS-AdamW: variance-reduced gradients (approximate)", f"{PO} MARS",
                   "Yuan et al. 2024, arXiv:2411.10438"),
        _component("schedulefree-adamw", schedulefree_adamw,
                   {"lr": 2.5e-3, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0,
                    "schedulefree_warmup_steps": 0,
                    "r": 0.0, "weight_lr_power": 2.0},
                   "Schedule-Free AdamW (use schedule = constant)", f"{SF} AdamWScheduleFree",
                   "Defazio et al. 2024, arXiv:2405.15682"),
        _component("prodigy", prodigy, {"lr": 1.0, "betas": [0.9, 0.999], "d0": 1e-6, "d_coef": 1.0,
                                        "weight_decay": 0.0, "bias_correction": False, "safeguard_warmup": False,
                                        "eps": 1e-8},
                   "Prodigy: learns its step size (lr is a multiplier)", f"{PO} Prodigy",
                   "Mishchenko & Defazio 2023, arXiv:2306.06101"),
        _component("adam-mini", adam_mini, {"betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.1},
                   "Adam-mini: one second moment per tensor (embedding, head: per entry)", f"{PO} AdamMini",
                   "Zhang et al. 2024, arXiv:2406.16793"),
        _component("adopt", adopt, {"lr": 1e-3, "betas": [0.9, 0.9999], "eps": 1e-6, "weight_decay": 0.0},
                   "ADOPT: Adam with the second moment lagged one step", f"{PO} ADOPT",
                   "Taniguchi et al. 2024, arXiv:2411.02853"),
    ]
