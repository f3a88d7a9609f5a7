"""AdamWPrune: AdamW that prunes from its own state (pruning method "state").

Importance score: --adamwprune-variant picks one of lib/optim/_prune_scores.py
(AdamWPrune's bitter0..bitter9, each documented there with its formula and
reported result); the default, `fisher`, is the score this optimizer had
before the variants, so earlier runs are unchanged:

the Optimal Brain Damage saliency (LeCun et al., 1990),
the loss increase expected from setting w to zero, 0.5 * H_ii * w^2, with the
Hessian diagonal replaced by the empirical Fisher diagonal E[g^2] (as in
Theis et al., 2018, "Faster gaze prediction with dense networks and Fisher
pruning").  Adam already keeps E[g^2]: it is exp_avg_sq.  So the score is

    w^2 * exp_avg_sq

and costs no extra buffer.  The constant 0.5 and Adam's bias correction
1 / (1 - beta2^t) are the same for every entry of a tensor, and masks are
chosen per tensor (lib/pruning/), so both are left out.  A tensor that has
no optimizer state yet (no step taken) falls back to w^2, i.e. magnitude.

Division of work: lib/pruning/state.py's StatePruner owns the schedule and picks
which entries to prune from state_scores(); this optimizer stores the
resulting boolean keep-masks (its only extra state) and zeroes the pruned
weights after every step, so they stay exactly zero.  Without masks (pruning
method "none") it is torch's AdamW, step for step.

The masks are kept outside self.state on purpose: torch's AdamW takes a
non-empty per-tensor state to mean "initialised", and torch's
load_state_dict casts every state tensor to the parameter's dtype, which
would turn a bool mask into floats.  state_dict() adds them under
"prune_masks", keyed by the same parameter indices torch uses.
"""

from dataclasses import dataclass, field

import torch

from lib.optim._groups import kernel_choice
from lib.optim._prune_scores import SCORES


class AdamWPrune(torch.optim.AdamW):
    """torch.optim.AdamW plus keep-masks that pin pruned weights to zero."""

    def __init__(self, params, *, variant, **kwargs):
        super().__init__(params, **kwargs)
        self.variant = variant
        self.score = SCORES[variant]
        self.prune_masks = {}  # parameter -> bool tensor, True = keep

    def state_scores(self, p):
        """The variant's importance of each entry of p (higher = keep)."""
        state = self.state.get(p, {})
        return self.score(p.detach(), state.get("exp_avg"), state.get("exp_avg_sq"))

    def set_prune_mask(self, p, keep):
        """Prune p where `keep` is False, now and after every later step."""
        self.prune_masks[p] = keep.to(device=p.device, dtype=torch.bool)
        self.apply_prune_masks()

    @torch.no_grad()
    def apply_prune_masks(self):
        for p, keep in self.prune_masks.items():
            p.mul_(keep)

    @torch.no_grad()
    def step(self, closure=None):
        loss = super().step(closure)
        self.apply_prune_masks()
        return loss

    def _param_index(self):
        """Parameters in torch's state_dict order (0, 1, ... over the groups)."""
        return [p for group in self.param_groups for p in group["params"]]

    def state_dict(self):
        state = super().state_dict()
        position = {id(p): i for i, p in enumerate(self._param_index())}
        state["prune_masks"] = {
            position[id(p)]: keep.clone() for p, keep in self.prune_masks.items()
        }
        return state

    def load_state_dict(self, state_dict):
        state_dict = dict(state_dict)
        masks = state_dict.pop("prune_masks", {})
        super().load_state_dict(state_dict)
        params = self._param_index()
        self.prune_masks = {
            params[i]: keep.to(device=params[i].device, dtype=torch.bool)
            for i, keep in masks.items()
        }


@dataclass(frozen=True)
class Config:
    """The score; the schedule's knobs are in lib/pruning's PruningConfig.
    A resumed run keeps its score: masks chosen by two scores would be
    neither variant's result."""

    adamwprune_variant: str = field(metadata={"fixed_on_resume": True})

    def __post_init__(self):
        if self.adamwprune_variant not in SCORES:
            raise ValueError(
                f"--adamwprune-variant {self.adamwprune_variant!r} is unknown; choose one of {', '.join(SCORES)}"
            )


def build(groups, settings, config):
    return AdamWPrune(groups, variant=config.adamwprune_variant, lr=settings.learning_rate, betas=settings.betas,
                      **kernel_choice(groups))  # fmt: skip
