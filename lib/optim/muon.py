"""muon: Newton-Schulz orthogonalised momentum for the blocks' matrices, AdamW for the rest.

Muon (Keller Jordan, 2024; modded-nanogpt's GPT-2 speedruns) runs SGD with
Nesterov momentum and replaces each 2-D update by (about) the nearest
semi-orthogonal matrix: G = U S V^T -> U S' V^T with S' near 1, computed
by five steps of the quintic Newton-Schulz iteration
X <- a X + (b A + c A^2) X, A = X X^T, (a, b, c) = (3.4445, -4.7750, 2.0315),
in bfloat16 on X = G / (||G||_F + 1e-7) (transposed so X X^T is the
smaller Gram matrix).  Those coefficients maximise the slope at zero rather
than converge, so S' lands in about [0.7, 1.2] instead of exactly 1, which
the source found does not hurt (singular values far below the largest, as a
random square matrix has, rise less in five steps).  Each update is scaled by
sqrt(max(1, rows / cols)) (modded-nanogpt's later records, and the muon
package) and applied as p -= lr_muon * scale * O, with decoupled weight
decay p *= 1 - lr_muon * weight_decay.  A fused QKV matrix (rows = 3 x cols,
GPT-2's c_attn) is orthogonalised as its three square blocks, as the first
Muon record did: the same as separate q, k, v projections.

Muon is for hidden matrices only: embeddings, the output head, LayerNorm
gains and biases go to AdamW (its usual update, betas BETA1/BETA2, eps 1e-8,
the group's weight decay), in the same optimizer.  "Hidden matrices" here:
the weight of every nn.Linear except one tied to an nn.Embedding and the
last nn.Linear of the model (its output head; GPT-2's lm_head is both).

Learning rates: --learning-rate (and its schedule) is AdamW's; MUON_LR is
Muon's peak, following the same schedule (the loop sets every group's lr to
the schedule's value; Muon's groups multiply it by MUON_LR / LEARNING_RATE).
MUON_MOMENTUM is Muon's momentum (0.95 in the source).

Under DDP the gradients are already all-reduced when step() runs, so every
rank computes the same update from the same numbers and the replicas stay
identical; modded-nanogpt instead shares the Newton-Schulz work out among
the ranks and all-gathers the results, a speed change left out here.
"""

import math
from dataclasses import dataclass

import torch
from torch import nn

from lib.optim._groups import trainable_unique

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NS_STEPS = 5


@torch.no_grad()
def newton_schulz(g, steps=NS_STEPS, eps=1e-7):
    """About U V^T for g = U S V^T (singular values in about [0.7, 1.2]), in bfloat16."""
    a, b, c = NS_COEFFICIENTS
    x = g.bfloat16()
    x = x / (x.norm() + eps)  # top singular value <= 1
    tall = g.size(0) > g.size(1)
    if tall:
        x = x.T
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if tall else x


def orthogonal_update(g):
    """Newton-Schulz of g, scaled by sqrt(max(1, rows / cols)); a fused QKV
    matrix (rows = 3 cols) block by block."""
    if g.size(0) == 3 * g.size(1):
        return torch.cat([orthogonal_update(block) for block in g.split(g.size(1))])
    return newton_schulz(g).to(g.dtype) * max(1.0, g.size(0) / g.size(1)) ** 0.5


class Muon(torch.optim.Optimizer):
    """Muon on groups with use_muon=True, AdamW on the others."""

    def __init__(self, groups, *, lr, muon_lr, momentum, betas, eps=1e-8):
        defaults = dict(lr=lr, betas=betas, eps=eps, momentum=momentum, lr_ratio=1.0, use_muon=False)
        for group in groups:
            if group.get("use_muon"):
                group.setdefault("lr_ratio", muon_lr / lr)
        super().__init__(groups, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr = group["lr"] * group["lr_ratio"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if group["use_muon"]:
                    self._muon(p, group, lr)
                else:
                    self._adamw(p, group, lr)
        return loss

    def _muon(self, p, group, lr):
        state = self.state[p]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(p)
        buf, momentum = state["momentum_buffer"], group["momentum"]
        buf.lerp_(p.grad, 1 - momentum)
        nesterov = p.grad.lerp(buf, momentum)
        p.mul_(1 - lr * group["weight_decay"])
        p.add_(orthogonal_update(nesterov), alpha=-lr)

    def _adamw(self, p, group, lr):
        state = self.state[p]
        if "step" not in state:
            state["step"] = torch.zeros((), dtype=torch.float32)
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
        beta1, beta2 = group["betas"]
        state["step"] += 1
        step = state["step"].item()
        p.mul_(1 - lr * group["weight_decay"])
        state["exp_avg"].lerp_(p.grad, 1 - beta1)
        state["exp_avg_sq"].mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
        denom = (state["exp_avg_sq"].sqrt() / math.sqrt(1 - beta2**step)).add_(group["eps"])
        p.addcdiv_(state["exp_avg"], denom, value=-lr / (1 - beta1**step))


def hidden_matrices(model):
    """The weights Muon takes: every nn.Linear's, except one tied to an
    nn.Embedding and the model's last nn.Linear (the output head)."""
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    linears = [m.weight for m in model.modules() if isinstance(m, nn.Linear)]
    return [w for w in linears[:-1] if id(w) not in embeddings and w.requires_grad]


def param_groups(model, weight_decay):
    """Muon's split (replacing lib/optim/_groups.py's): the hidden matrices
    (Muon, decayed), the other tensors with dim >= 2 (AdamW, decayed:
    embeddings, the head), the 1-D ones (AdamW, no decay); empty ones left out."""
    params = trainable_unique(model)
    muon = {id(p) for p in hidden_matrices(model)}
    groups = [
        {"params": [p for p in params if id(p) in muon], "weight_decay": weight_decay, "use_muon": True},
        {"params": [p for p in params if id(p) not in muon and p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


@dataclass(frozen=True)
class Config:
    """Muon's own learning rate and momentum (AdamW's part uses the common settings)."""

    muon_lr: float
    muon_momentum: float

    def __post_init__(self):
        if not (self.muon_lr > 0 and math.isfinite(self.muon_lr)):
            raise ValueError(f"--muon-lr must be > 0, not {self.muon_lr}")
        if not 0.0 <= self.muon_momentum < 1.0:
            raise ValueError(f"--muon-momentum must be in [0, 1), not {self.muon_momentum}")


def build(groups, settings, config):
    return Muon(groups, lr=settings.learning_rate, muon_lr=config.muon_lr, momentum=config.muon_momentum,
                betas=settings.betas)  # fmt: skip
