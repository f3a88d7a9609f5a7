"""AdamWAdv: AdamW with AMSGrad and update clipping.

AMSGrad (Reddi et al., ICLR 2018) divides by the running maximum of the
second moment instead of the moment itself, so a tensor's step size never
grows because its gradients went quiet for a while.

The clipping is of the update, not of the gradient.  The training loop
already clips the global gradient norm (--grad-clip); doing that again here
would change nothing.  What gradient clipping cannot catch is an Adam update
that is large although the gradient is not: when v is small and stale, a
modest gradient gives m_hat / sqrt(v_hat) >> 1.  So, as in Adafactor (Shazeer
& Stern, 2018, "update clipping"), each tensor's update u = m_hat /
(sqrt(max v_hat) + eps) is scaled down to an RMS of at most `max_update_rms`
(1.0, Adafactor's d) before the learning rate is applied.  A well-behaved
Adam update has an RMS below 1, so in a healthy run this clip is inactive.

With max_update_rms=inf the update is exactly torch's AdamW(amsgrad=True)
(up to floating-point association), which tests/test_optim.py checks.
"""

import math
from dataclasses import dataclass

import torch


class AdamWAdv(torch.optim.Optimizer):
    """AdamW + AMSGrad + per-tensor update-RMS clipping (see the module docstring)."""

    def __init__(
        self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, max_update_rms=1.0
    ):
        if not max_update_rms > 0:
            raise ValueError(f"AdamWAdv: max_update_rms must be > 0, got {max_update_rms}")
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            eps=eps,
            weight_decay=weight_decay,
            max_update_rms=max_update_rms,
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self._update(p, group)
        return loss

    def _update(self, p, group):
        if p.grad.is_sparse:
            raise RuntimeError("AdamWAdv does not support sparse gradients")
        grad = p.grad
        lr = group["lr"]
        beta1, beta2 = group["betas"]
        state = self.state[p]
        if not state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["step"] += 1
        step = state["step"]
        exp_avg, exp_avg_sq, max_exp_avg_sq = (
            state["exp_avg"],
            state["exp_avg_sq"],
            state["max_exp_avg_sq"],
        )

        p.mul_(1.0 - lr * group["weight_decay"])
        exp_avg.lerp_(grad, 1.0 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
        torch.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
        denom = (max_exp_avg_sq.sqrt() / math.sqrt(1.0 - beta2**step)).add_(group["eps"])
        update = exp_avg.div(denom).div_(1.0 - beta1**step)
        if math.isfinite(group["max_update_rms"]):
            rms = update.norm() / math.sqrt(update.numel())
            # Divide by max(1, rms / d): a tensor, so no host sync on GPU.
            update.div_(torch.clamp(rms / group["max_update_rms"], min=1.0))
        p.add_(update, alpha=-lr)


@dataclass(frozen=True)
class Config:
    """No knobs of its own (max_update_rms stays at Adafactor's 1.0)."""


def build(groups, settings, config):
    return AdamWAdv(groups, lr=settings.learning_rate, betas=settings.betas)
