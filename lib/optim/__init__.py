"""Optimizers by name: build_optimizer("adamwspam", model, ...) -> torch.optim.Optimizer.

Every optimizer gets the same two parameter groups as nanoGPT: weight decay on
tensors with dim >= 2 (matmul weights and embeddings), none on biases and
LayerNorm gains, which are 1-D and whose decay only hurts.  The training loop
sets group["lr"] before every step(), so the lr passed here is only a start.

  sgd         torch SGD, momentum, no Nesterov; weight decay as an L2 term.
  adam        torch Adam; weight decay as an L2 term added to the gradient
              (torch's coupled semantics, kept so "adam" means what it means
              in torch; use adamw for decoupled decay).
  adamw       torch AdamW, fused kernel when every parameter is on CUDA.
  adamwadv    AdamW + AMSGrad + update clipping (lib/optim/adamwadv.py).
  adamwspam   SPAM, spike-aware AdamW with momentum reset (lib/optim/spam.py).
  adamwprune  AdamW that holds the masks of pruning method "state"
              (lib/optim/adamwprune.py, used by lib/pruning.py).
"""

from dataclasses import dataclass

import torch

from lib.optim.adamwadv import AdamWAdv
from lib.optim.adamwprune import AdamWPrune
from lib.optim.spam import AdamWSpam

__all__ = ["OPTIMIZERS", "build_optimizer", "param_groups", "AdamWAdv", "AdamWPrune", "AdamWSpam"]


@dataclass(frozen=True)
class OptimizerSettings:
    """The hyperparameters of every optimizer; each builder takes what it needs."""

    lr: float
    betas: tuple
    momentum: float
    spam_interval: int
    spam_warmup: int
    spam_theta: float


def param_groups(model, weight_decay):
    """Two groups as in nanoGPT: decay for tensors with dim >= 2, none for the rest.

    model.parameters() yields a tied weight (wte / lm_head) once, so it is
    optimized once.  Empty groups are left out (torch would keep them as dead
    entries in every checkpoint).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


def _kernel_choice(groups):
    """fused=True when every parameter is on one CUDA or CPU device: one
    vectorised kernel per tensor does the whole update (torch >= 2.4 has it
    on CPU too; on 2 CPU cores an AdamW step over 16M parameters took 42 ms
    with foreach, which on CPU is a loop of per-tensor ops, and 7.5 ms
    fused).  foreach=True otherwise (other devices, mixed placements)."""
    devices = {p.device.type for g in groups for p in g["params"]}
    return {"fused": True} if len(devices) == 1 and devices <= {"cuda", "cpu"} else {"foreach": True}


def _sgd(groups, s):
    return torch.optim.SGD(groups, lr=s.lr, momentum=s.momentum, nesterov=False)


def _adam(groups, s):
    return torch.optim.Adam(groups, lr=s.lr, betas=s.betas, **_kernel_choice(groups))


def _adamw(groups, s):
    return torch.optim.AdamW(groups, lr=s.lr, betas=s.betas, **_kernel_choice(groups))


def _adamwadv(groups, s):
    return AdamWAdv(groups, lr=s.lr, betas=s.betas)


def _adamwspam(groups, s):
    return AdamWSpam(
        groups,
        lr=s.lr,
        betas=s.betas,
        reset_interval=s.spam_interval,
        warmup=s.spam_warmup,
        theta=s.spam_theta,
    )


def _adamwprune(groups, s):
    return AdamWPrune(groups, lr=s.lr, betas=s.betas, **_kernel_choice(groups))


OPTIMIZERS = {
    "sgd": _sgd,
    "adam": _adam,
    "adamw": _adamw,
    "adamwadv": _adamwadv,
    "adamwspam": _adamwspam,
    "adamwprune": _adamwprune,
}


def build_optimizer(
    name, model, *, lr, weight_decay, betas, momentum, spam_interval, spam_warmup, spam_theta
):
    """The optimizer called `name` over model's parameters (see the module docstring).

    Raises ValueError naming the valid optimizers when `name` is unknown.
    """
    try:
        builder = OPTIMIZERS[name]
    except KeyError:
        raise ValueError(
            f"unknown optimizer {name!r}; valid optimizers: {', '.join(OPTIMIZERS)}"
        ) from None
    settings = OptimizerSettings(
        lr=lr,
        betas=tuple(betas),
        momentum=momentum,
        spam_interval=spam_interval,
        spam_warmup=spam_warmup,
        spam_theta=spam_theta,
    )
    return builder(param_groups(model, weight_decay), settings)
