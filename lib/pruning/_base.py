"""What the mask-based pruning methods share: keep_mask() and MaskPruner."""

import torch

from lib.pruning._weights import prunable_weights


def keep_mask(scores, sparsity, previous_keep=None):
    """Boolean mask (True = keep) pruning the round(sparsity * n) lowest scores.

    Entries already pruned in previous_keep are pruned first, so masks only grow.
    """
    n_prune = round(sparsity * scores.numel())
    flat = scores.detach().flatten().float().clone()
    if previous_keep is not None:
        flat[~previous_keep.flatten()] = -float("inf")
    keep = torch.ones_like(flat, dtype=torch.bool)
    if n_prune > 0:
        keep[torch.topk(flat, n_prune, largest=False).indices] = False
    return keep.view_as(scores)


class MaskPruner:
    """Keeps a keep-mask per prunable weight, recomputed on schedule from scores().

    Subclasses define scores(name, weight); the masks live in self.masks,
    except for StatePruner, which keeps them in the optimizer.
    """

    def __init__(self, model, optimizer, schedule):
        self.weights = prunable_weights(model)
        self.optimizer = optimizer
        self.schedule = schedule
        self.masks = {}
        self.applied_sparsity = 0.0  # sparsity of the masks in place

    def scores(self, name, weight):
        raise NotImplementedError

    def observe(self):
        """Hook run at every step() before masks are recomputed (movement scores)."""

    def current_target(self, iter_num):
        return self.schedule.target(iter_num)

    @torch.no_grad()
    def step(self, iter_num, observe=True):
        """Call right after optimizer.step(): update masks on schedule, then
        apply them.  observe=False: the step was skipped (a gradient scaler
        found inf/NaN gradients), so its gradients are not observed.
        True when this call brought the masks to the final target sparsity."""
        if observe:
            self.observe()
        target = self.schedule.target(iter_num)
        reached = False
        if self.schedule.is_update(iter_num) and target > self.applied_sparsity:
            for index, (name, weight) in enumerate(self.weights.items()):
                layer_target = self.schedule.layer_target(target, index, len(self.weights))
                keep = keep_mask(self.scores(name, weight), layer_target, self._mask(name))
                self._set_mask(name, keep)
            self.applied_sparsity = target
            reached = target >= self.schedule.target_sparsity
        self._apply_masks()
        return reached

    def _mask(self, name):
        return self.masks.get(name)

    def _set_mask(self, name, keep):
        self.masks[name] = keep

    def _apply_masks(self):
        for name, keep in self.masks.items():
            self.weights[name].mul_(keep)

    def state_dict(self):
        return {
            "applied_sparsity": self.applied_sparsity,
            "masks": {name: keep.clone() for name, keep in self.masks.items()},
        }

    @torch.no_grad()
    def load_state_dict(self, state_dict):
        self.applied_sparsity = state_dict["applied_sparsity"]
        self.masks = {
            name: keep.to(device=self.weights[name].device, dtype=torch.bool)
            for name, keep in state_dict["masks"].items()
        }
        self._apply_masks()
