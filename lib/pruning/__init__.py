"""Unstructured weight pruning on a schedule, methods as plug-ins.

A method is a module lib/pruning/<name>.py, <name> being its
--pruning-method value, exposing its pruner class as PRUNER:
PRUNER(model, optimizer, schedule) with step(iter_num, observe=True)
(observe=False after a step a gradient scaler skipped for inf/NaN gradients),
current_target(iter_num), state_dict(), load_state_dict() and `weights`,
{name: tensor} of what it prunes ({} for none), which layer_sparsity() and
save_masks() (lib/pruning/_masks.py) read at every eval.  Its entry
PRUNING_<NAME> goes in lib/pruning/Kconfig.  Nothing else lists the methods:
modules are found with pkgutil (names starting with "_" are the shared
parts) and imported when first asked for.

  none       dense training (lib/pruning/none.py)
  magnitude  score |w|
  movement   score -sum_t w_t * grad_t (reads p.grad: the loop calls
             backward -> optimizer.step() -> pruner.step(iter_num) -> zero_grad())
  state      from AdamWPrune's own moments; needs --optimizer adamwprune

What is pruned: the weight of every nn.Linear in the model except one tied to
an nn.Embedding (GPT-2's lm_head shares wte's weight; pruning it would prune
the embedding).  Embeddings, LayerNorms and biases are never pruned.  In GPT-2
that is c_attn, c_proj, c_fc and mlp.c_proj of every block.

Schedule (--pruning-schedule, lib/pruning/_schedule.py): sparsity 0 until
`warmup`, then a ramp s(t) = s_f * r(p), p = (t - warmup) / ramp_iters, for
ramp_iters iterations, then s_f.  r is Zhu & Gupta's (2017, "To prune, or
not to prune") 1 - (1 - p)^3 by default (prunes fast while many weights are
redundant, slowly near the target), `linear` p, or AdamWPrune's `cubic` p^3.
--pruning-layer-adaptive gives tensor i of n the target
min(0.95, s(t) * (0.7 + 0.6 * i / (n - 1))) instead (AdamWPrune's bitter4):
the mean over tensors is s(t), the fraction of all weights is not (the
tensors differ in size).  Masks are recomputed every `interval` iterations
from `warmup` on, and once more at warmup + ramp_iters, so from that iteration
on the target holds whatever the interval.

Selection: per tensor, the round(s * numel) entries with the lowest score are
pruned (uniform sparsity across layers, as in Zhu & Gupta).  A global threshold
would compare scores across layers of different scale (GPT-2 initialises the
residual projections smaller) and empty some layers.  Per-tensor rounding
moves the overall sparsity by at most half an entry per tensor.  Masks only
grow: an entry pruned once stays pruned, so pruned weights stay exactly zero.

Pass the model itself, or a DDP / torch.compile wrapper (unwrapped here, so
mask names are the same either way and checkpoints move between them).

Usage, from parsed flags (a dict of argparse dests):

  pruner = build_pruner(model, optimizer, PruningConfig.from_flags(flags))

Every error is a ValueError with a one-line message.
"""

import sys
from dataclasses import dataclass, field
from typing import Protocol

from lib.plugins import from_flags, module_names, part_module
from lib.pruning._masks import MASKS_FILE, layer_sparsity, load_masks, save_masks
from lib.pruning._schedule import RAMPS, PruningSchedule
from lib.pruning._weights import prunable_weights, sparsity

__all__ = [
    "MASKS_FILE",
    "PruningConfig",
    "layer_sparsity",
    "load_masks",
    "save_masks",
    "build_pruner",
    "prunable_weights",
    "pruner_class",
    "pruning_methods",
    "sparsity",
]


class Pruner(Protocol):
    """What the training loop and the checkpoint use of a pruner."""

    weights: dict  # {name: tensor} it prunes, {} for none (layer_sparsity, save_masks)

    def step(self, iter_num, observe=True) -> bool:
        """Masks updated and applied after an optimizer step; True at the
        step that brings them to the final target sparsity."""

    def state_dict(self): ...

    def load_state_dict(self, state): ...


def pruning_methods():
    """Every --pruning-method value, one per module of this package (sorted)."""
    return module_names(sys.modules[__name__])


def pruner_class(name):
    """The pruner class of method `name` (its module imported on first use)."""
    return part_module(sys.modules[__name__], name, "--pruning-method").PRUNER


@dataclass(frozen=True)
class PruningConfig:
    """The pruning options; fields named after their flags.  A resumed run
    keeps its method (lib/plugins.fixed_on_resume): the saved state is its."""

    pruning_method: str = field(metadata={"fixed_on_resume": True})
    target_sparsity: float
    pruning_warmup: int
    pruning_ramp_iters: int
    pruning_interval: int
    pruning_schedule: str
    pruning_layer_adaptive: bool

    def __post_init__(self):
        pruner_class(self.pruning_method)  # ValueError naming the valid ones
        if self.pruning_schedule not in RAMPS:
            raise ValueError(f"--pruning-schedule {self.pruning_schedule!r} is unknown; choose one of {', '.join(RAMPS)}")
        if not 0.0 <= self.target_sparsity < 1.0:
            raise ValueError(f"--target-sparsity must be in [0, 1), not {self.target_sparsity}")
        if self.pruning_warmup < 0:
            raise ValueError(f"--pruning-warmup must be >= 0, not {self.pruning_warmup}")
        if self.pruning_ramp_iters < 0:
            raise ValueError(f"--pruning-ramp-iters must be >= 0, not {self.pruning_ramp_iters}")
        if self.pruning_interval < 1:
            raise ValueError(f"--pruning-interval must be >= 1, not {self.pruning_interval}")

    @classmethod
    def from_flags(cls, flags):
        """The config from `flags`, a dict of parsed flags (e.g. vars(args))."""
        return from_flags(cls, flags)

    def schedule(self):
        """The sparsity schedule these options describe."""
        return PruningSchedule(
            target_sparsity=self.target_sparsity,
            warmup=self.pruning_warmup,
            ramp_iters=self.pruning_ramp_iters,
            interval=self.pruning_interval,
            shape=self.pruning_schedule,
            layer_adaptive=self.pruning_layer_adaptive,
        )


def build_pruner(model, optimizer, config):
    """The pruner of config.pruning_method over model (optimizer: the run's;
    method "state" needs AdamWPrune)."""
    return pruner_class(config.pruning_method)(model, optimizer, config.schedule())
