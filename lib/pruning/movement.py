"""movement: prunes the weights moving towards zero (Sanh et al., 2020).

Score -sum_t w_t * grad_t, accumulated at every step(): weights moving away
from zero are kept.  This reads p.grad, so the loop must call, in order:
backward -> optimizer.step() -> pruner.step(iter_num) -> zero_grad().  The
learning-rate factor of the paper's score is left out.  A float16 step the
gradient scaler skipped (inf/NaN gradients) is not observed (step(...,
observe=False)): one inf would stay in the scores for good.
"""

import torch

from lib.pruning._base import MaskPruner


class MovementPruner(MaskPruner):
    """Prunes the weights moving towards zero: score = -sum_t w_t * grad_t."""

    def __init__(self, model, optimizer, schedule):
        super().__init__(model, optimizer, schedule)
        self.movement = {
            name: torch.zeros_like(w, dtype=torch.float32) for name, w in self.weights.items()
        }

    def observe(self):
        for name, weight in self.weights.items():
            if weight.grad is not None:
                self.movement[name].addcmul_(weight.float(), weight.grad.float(), value=-1.0)

    def scores(self, name, weight):
        return self.movement[name]

    def state_dict(self):
        state = super().state_dict()
        state["movement"] = {name: score.clone() for name, score in self.movement.items()}
        return state

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        for name, score in state_dict["movement"].items():
            self.movement[name].copy_(score)


PRUNER = MovementPruner
