"""state: prunes from AdamWPrune's own moments (lib/optim/adamwprune.py).

Scores and masks live in the optimizer, so the masks travel in its
state_dict; this pruner only keeps the schedule.
"""

from lib.optim.adamwprune import AdamWPrune
from lib.pruning._base import MaskPruner


class StatePruner(MaskPruner):
    """Pruning method "state": scores and masks live in the AdamWPrune optimizer."""

    def __init__(self, model, optimizer, schedule):
        if not isinstance(optimizer, AdamWPrune):
            raise ValueError(
                "--pruning-method state scores weights from AdamWPrune's moments: "
                f"use --optimizer adamwprune (got {type(optimizer).__name__})"
            )
        if optimizer.variant == "bitter4" and not schedule.layer_adaptive:
            raise ValueError(
                "--adamwprune-variant bitter4 is bitter3's score with layer-adaptive sparsity: "
                "add --pruning-layer-adaptive (and --pruning-schedule cubic, as AdamWPrune)"
            )
        super().__init__(model, optimizer, schedule)

    def scores(self, name, weight):
        return self.optimizer.state_scores(weight)

    def _mask(self, name):
        return self.optimizer.prune_masks.get(self.weights[name])

    def _set_mask(self, name, keep):
        self.optimizer.set_prune_mask(self.weights[name], keep)

    def _apply_masks(self):
        self.optimizer.apply_prune_masks()

    def state_dict(self):
        return {"applied_sparsity": self.applied_sparsity}  # masks: in the optimizer's

    def load_state_dict(self, state_dict):
        self.applied_sparsity = state_dict["applied_sparsity"]


PRUNER = StatePruner
