"""AdamWPrune: AdamW that prunes from its own state (pruning method "state").

Importance score: the Optimal Brain Damage saliency (LeCun et al., 1990),
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

from dataclasses import dataclass

import torch

from lib.optim._groups import kernel_choice


class AdamWPrune(torch.optim.AdamW):
    """torch.optim.AdamW plus keep-masks that pin pruned weights to zero."""

    def __init__(self, params, **kwargs):
        super().__init__(params, **kwargs)
        self.prune_masks = {}  # parameter -> bool tensor, True = keep

    def state_scores(self, p):
        """OBD / Fisher importance of each entry of p: w^2 * E[g^2] (higher = keep)."""
        score = p.detach().float().square()
        exp_avg_sq = self.state.get(p, {}).get("exp_avg_sq")
        if exp_avg_sq is not None:
            score.mul_(exp_avg_sq)
        return score

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
    """No knobs of its own: pruning's are in lib/pruning's PruningConfig."""


def build(groups, settings, config):
    return AdamWPrune(groups, lr=settings.learning_rate, betas=settings.betas, **kernel_choice(groups))
