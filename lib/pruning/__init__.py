"""Unstructured weight pruning on a schedule: build_pruner("magnitude", model, optimizer, ...).

What is pruned: the weight of every nn.Linear in the model except one tied to
an nn.Embedding (GPT-2's lm_head shares wte's weight; pruning it would prune
the embedding).  Embeddings, LayerNorms and biases are never pruned.  In GPT-2
that is c_attn, c_proj, c_fc and mlp.c_proj of every block.

Schedule (Zhu & Gupta, 2017, "To prune, or not to prune"): sparsity 0 until
`warmup`, then the cubic ramp s(t) = s_f * (1 - (1 - (t - warmup) / ramp_iters)^3)
for ramp_iters iterations (prunes fast while many weights are redundant, slowly
near the target), then s_f.  Masks are recomputed every `interval` iterations
from `warmup` on, and once more at warmup + ramp_iters, so from that iteration
on the target holds whatever the interval.

Selection: per tensor, the round(s * numel) entries with the lowest score are
pruned (uniform sparsity across layers, as in Zhu & Gupta).  A global threshold
would compare scores across layers of different scale (GPT-2 initialises the
residual projections smaller) and empty some layers.  Per-tensor rounding
moves the overall sparsity by at most half an entry per tensor.  Masks only
grow: an entry pruned once stays pruned, so pruned weights stay exactly zero.

Scores (higher = keep):
  magnitude  |w|
  movement   -sum_t w_t * grad_t, accumulated at every step() (Sanh et al., 2020:
             weights moving away from zero are kept).  This reads p.grad, so
             the loop must call, in order: backward -> optimizer.step() ->
             pruner.step(iter_num) -> zero_grad().  The learning-rate factor of
             the paper's score is left out.
  state      from AdamWPrune's own moments (lib/optim/adamwprune.py); masks
             are stored in and applied by that optimizer, so they travel in
             its state_dict.

Pass the model itself, or a DDP / torch.compile wrapper (unwrapped here, so
mask names are the same either way and checkpoints move between them).
"""

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from lib.optim.adamwprune import AdamWPrune


def _unwrap(model):
    if isinstance(model, DistributedDataParallel):
        model = model.module
    return getattr(model, "_orig_mod", model)  # torch.compile's wrapper


def prunable_weights(model):
    """{name: weight} of every nn.Linear not tied to an nn.Embedding, in module order."""
    model = _unwrap(model)
    embedding_weights = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    return {
        f"{name}.weight": module.weight
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and id(module.weight) not in embedding_weights
    }


def sparsity(model):
    """Fraction of exact zeros among the prunable weights, read from the weights."""
    weights = prunable_weights(model).values()
    total = sum(w.numel() for w in weights)
    if total == 0:
        return 0.0
    # Counts add up on the weights' device; int() is then the one host sync
    # (one per tensor would stall a GPU dozens of times per call).
    nonzero = int(sum(torch.count_nonzero(w) for w in weights))
    return (total - nonzero) / total


@dataclass(frozen=True)
class PruningSchedule:
    """Target sparsity per iteration (cubic ramp) and when masks are recomputed."""

    target_sparsity: float
    warmup: int
    ramp_iters: int
    interval: int

    def __post_init__(self):
        if not 0.0 <= self.target_sparsity < 1.0:
            raise ValueError(f"target_sparsity must be in [0, 1), got {self.target_sparsity}")
        if self.warmup < 0 or self.ramp_iters < 0:
            raise ValueError("pruning warmup and ramp_iters must be >= 0")
        if self.interval < 1:
            raise ValueError(f"pruning interval must be >= 1, got {self.interval}")

    @property
    def end(self):
        """First iteration at which the target sparsity holds."""
        return self.warmup + self.ramp_iters

    def target(self, iter_num):
        if iter_num < self.warmup:
            return 0.0
        if iter_num >= self.end:
            return self.target_sparsity
        progress = (iter_num - self.warmup) / self.ramp_iters
        return self.target_sparsity * (1.0 - (1.0 - progress) ** 3)

    def is_update(self, iter_num):
        if iter_num < self.warmup:
            return False
        return (iter_num - self.warmup) % self.interval == 0 or iter_num >= self.end


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


class NoPruner:
    """Pruning method "none": every call is a no-op."""

    def step(self, iter_num):
        pass

    def current_target(self, iter_num):
        return 0.0

    def state_dict(self):
        return {}

    def load_state_dict(self, state_dict):
        pass


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
    def step(self, iter_num):
        """Call right after optimizer.step(): update masks on schedule, then apply them."""
        self.observe()
        target = self.schedule.target(iter_num)
        if self.schedule.is_update(iter_num) and target > self.applied_sparsity:
            for name, weight in self.weights.items():
                keep = keep_mask(self.scores(name, weight), target, self._mask(name))
                self._set_mask(name, keep)
            self.applied_sparsity = target
        self._apply_masks()

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


class MagnitudePruner(MaskPruner):
    """Prunes the smallest |w| (Zhu & Gupta, 2017)."""

    def scores(self, name, weight):
        return weight.abs()


class MovementPruner(MaskPruner):
    """Prunes the weights moving towards zero: score = -sum_t w_t * grad_t (Sanh et al., 2020)."""

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


class StatePruner(MaskPruner):
    """Pruning method "state": scores and masks live in the AdamWPrune optimizer."""

    def __init__(self, model, optimizer, schedule):
        if not isinstance(optimizer, AdamWPrune):
            raise ValueError(
                "pruning method 'state' scores weights from AdamWPrune's moments: "
                f"use --optimizer adamwprune (got {type(optimizer).__name__})"
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


PRUNERS = {
    "none": NoPruner,
    "magnitude": MagnitudePruner,
    "movement": MovementPruner,
    "state": StatePruner,
}


def build_pruner(method, model, optimizer, *, target_sparsity, warmup, ramp_iters, interval):
    """The pruner for `method` (see the module docstring); "none" prunes nothing.

    Raises ValueError (one line) for an unknown method, a bad schedule, or
    method "state" without the adamwprune optimizer.
    """
    try:
        pruner_class = PRUNERS[method]
    except KeyError:
        raise ValueError(
            f"unknown pruning method {method!r}; valid methods: {', '.join(PRUNERS)}"
        ) from None
    if pruner_class is NoPruner:
        return NoPruner()
    schedule = PruningSchedule(target_sparsity, warmup, ramp_iters, interval)
    return pruner_class(model, optimizer, schedule)
