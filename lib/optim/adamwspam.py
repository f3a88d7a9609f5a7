"""SPAM: Spike-Aware Adam with Momentum Reset (Huang et al., ICLR 2025,
arXiv:2501.06842), on top of AdamW's decoupled weight decay.

Gradient spikes up to 1000x the usual size poison Adam's moments for hundreds
of steps (beta2 = 0.999 forgets over ~1000).  SPAM adds three things to AdamW:

1. Momentum reset: every `reset_interval` steps the first and second moments
   are set to zero and bias correction starts again from step 1, so whatever
   spike got into the moments is gone.
2. Warmup after a reset: for `warmup` steps after each reset the step size is
   scaled by a cosine ramp 0.5 * (1 - cos(pi * k / warmup)), k = 1..warmup,
   on top of the lr the training loop sets (weight decay scales with it);
   fresh moments are noisy.
   Training starts without this ramp: the loop's own lr warmup covers it.
3. Spike-aware clipping: a gradient entry g with g^2 > theta * v is replaced by
   sign(g) * sqrt(theta * v), keeping its direction but not its size.

Choices where the paper leaves room (documented because they change results):
- v in the clipping test is the bias-corrected second moment v / (1 - beta2^k).
  The paper compares with the raw v; right after a reset the raw v is
  (1 - beta2^k) of its value (0.001 of it after one step with beta2 = 0.999),
  so ordinary gradients would be clipped hard.  The reference code avoids
  this by not clipping for some steps after a reset; bias correction solves it
  without another knob.
- Clipping starts once v exists (from the second step after the start or a
  reset), and entries whose v is exactly 0 are not clipped: a weight that has
  had no gradient since the reset has no scale to call a spike against, and
  clipping it to sqrt(theta * 0) = 0 would freeze it until the next reset.
- The paper's sparse-momentum variant (moments for a random subset) is not
  implemented: it saves memory, it is not part of the stabilisation.
- p.grad is never modified: the clipped gradient is a copy, so movement
  pruning (lib/pruning/movement.py) still reads the true gradient after step().

State (all in state_dict(), so a resumed run continues exactly): per tensor
exp_avg, exp_avg_sq and "step" (steps since its last reset, for bias
correction); per group "spam_step", the number of completed optimizer steps,
which decides when to reset and where the warmup stands.
"""

import math
from dataclasses import dataclass

import torch


def spam_lr_scale(steps_done, reset_interval, warmup):
    """Step-size factor of the step after `steps_done` completed steps.

    1.0 before the first reset; after the reset at step r * reset_interval it
    is the cosine ramp 0.5 * (1 - cos(pi * k / warmup)), k = 1 at the reset
    step itself, reaching exactly 1.0 at k = warmup.
    """
    if reset_interval <= 0 or warmup <= 0 or steps_done < reset_interval:
        return 1.0
    k = steps_done % reset_interval + 1
    if k >= warmup:
        return 1.0
    return 0.5 * (1.0 - math.cos(math.pi * k / warmup))


def is_reset_step(steps_done, reset_interval):
    """True when the step after `steps_done` completed steps resets the moments."""
    return reset_interval > 0 and steps_done > 0 and steps_done % reset_interval == 0


class AdamWSpam(torch.optim.Optimizer):
    """AdamW with SPAM's momentum reset, post-reset warmup and spike clipping.

    reset_interval: steps between moment resets (0 = never reset).
    warmup: steps of cosine step-size warmup after each reset (0 = none).
    theta: spike threshold on g^2 / v (the paper uses 5000).
    These three have no default here: Kconfig's SPAM_INTERVAL, SPAM_WARMUP
    and SPAM_THETA are the only ones (build() below passes them), so no
    second default can disagree with them.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, *,
                 reset_interval, warmup, theta):
        if reset_interval < 0 or warmup < 0:
            raise ValueError("AdamWSpam: reset_interval and warmup must be >= 0")
        if theta <= 0:
            raise ValueError(f"AdamWSpam: theta must be > 0, got {theta}")
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            eps=eps,
            weight_decay=weight_decay,
            reset_interval=reset_interval,
            warmup=warmup,
            theta=theta,
            spam_step=0,
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            steps_done = group["spam_step"]
            if is_reset_step(steps_done, group["reset_interval"]):
                self._reset_moments(group)
            lr = group["lr"] * spam_lr_scale(steps_done, group["reset_interval"], group["warmup"])
            for p in group["params"]:
                if p.grad is not None:
                    self._update(p, group, lr)
            group["spam_step"] = steps_done + 1
        return loss

    def _reset_moments(self, group):
        """Zero both moments of every tensor in the group; bias correction restarts."""
        for p in group["params"]:
            state = self.state.get(p)
            if state:
                state["exp_avg"].zero_()
                state["exp_avg_sq"].zero_()
                state["step"] = 0

    def _update(self, p, group, lr):
        if p.grad.is_sparse:
            raise RuntimeError("AdamWSpam does not support sparse gradients")
        beta1, beta2 = group["betas"]
        state = self.state[p]
        if not state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]

        grad = self._clip_spikes(p.grad, exp_avg_sq, state["step"], beta2, group["theta"])
        state["step"] += 1
        step = state["step"]

        p.mul_(1.0 - lr * group["weight_decay"])
        exp_avg.lerp_(grad, 1.0 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
        bias_correction1 = 1.0 - beta1**step
        bias_correction2_sqrt = math.sqrt(1.0 - beta2**step)
        denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(group["eps"])
        p.addcdiv_(exp_avg, denom, value=-lr / bias_correction1)

    @staticmethod
    def _clip_spikes(grad, exp_avg_sq, step, beta2, theta):
        """grad with entries g^2 > theta * v_hat set to sign(g) * sqrt(theta * v_hat).

        `step` is the number of updates v has had since its last reset; with
        none there is no v to compare with and grad is returned as is.
        """
        if step == 0:
            return grad
        v_hat = exp_avg_sq / (1.0 - beta2**step)
        limit = v_hat.mul_(theta).sqrt_()
        # v == 0: no scale yet for this entry (see the module docstring).
        limit.masked_fill_(limit == 0, math.inf)
        return torch.clamp(grad, min=-limit, max=limit)


@dataclass(frozen=True)
class Config:
    spam_interval: int
    spam_warmup: int
    spam_theta: float

    def __post_init__(self):
        if self.spam_interval < 0:
            raise ValueError(f"--spam-interval must be >= 0 (0: never reset), not {self.spam_interval}")
        if self.spam_warmup < 0:
            raise ValueError(f"--spam-warmup must be >= 0, not {self.spam_warmup}")
        if not (self.spam_theta > 0 and math.isfinite(self.spam_theta)):
            raise ValueError(f"--spam-theta must be > 0, not {self.spam_theta}")


def build(groups, settings, config):
    return AdamWSpam(
        groups,
        lr=settings.learning_rate,
        betas=settings.betas,
        reset_interval=config.spam_interval,
        warmup=config.spam_warmup,
        theta=config.spam_theta,
    )
