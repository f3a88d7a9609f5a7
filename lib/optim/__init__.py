"""Optimizers as plug-ins: the registry, the common settings, and build_optimizer().

An optimizer is a module lib/optim/<name>.py, <name> being its --optimizer
value, holding

  Config   a frozen dataclass of its own knobs, each field named after its
           train.py flag (adamwspam: spam_interval, spam_warmup,
           spam_theta), no defaults (those live in Kconfig), checked in
           __post_init__ with the flag's name in the message;
  build    build(groups, settings, config) -> torch.optim.Optimizer, with
           `groups` from param_groups() (lib/optim/_groups.py), or
           from the module's own param_groups(model, weight_decay) when it
           has one (muon), and `settings` this file's OptimizerConfig.

Its entry OPTIMIZER_<NAME> and its knobs (each `depends on` the entry) go
in lib/optim/Kconfig.  Nothing else lists the optimizers: modules are found
with pkgutil (names starting with "_" are helpers) and imported when first
asked for.

Every optimizer gets the same two parameter groups as nanoGPT (weight decay
on matrices and embeddings only).  The training loop sets group["lr"]
before every step(), so the learning rate given here is only a start.

  sgd         torch SGD, momentum, no Nesterov; weight decay as an L2 term.
  adam        torch Adam; weight decay as an L2 term added to the gradient
              (torch's coupled semantics, kept so "adam" means what it means
              in torch; use adamw for decoupled decay).
  adamw       torch AdamW, fused kernel when every parameter is on CUDA or CPU.
  adamwadv    AdamW + AMSGrad + update clipping.
  adamwspam   SPAM, spike-aware AdamW with momentum reset.
  adamwprune  AdamW that holds the masks of pruning method "state"
              (used by lib/pruning/state.py), scored by --adamwprune-variant.
  muon        Newton-Schulz orthogonalised momentum for the hidden
              matrices, AdamW for the rest; defines its own param_groups().

Usage, from parsed flags (a dict of argparse dests):

  settings = OptimizerConfig.from_flags(flags)
  optimizer = build_optimizer(model, settings, optimizer_config(settings.optimizer, flags))

Every error is a ValueError with a one-line message.
"""

import math
import sys
from dataclasses import dataclass, field

from lib.optim._groups import param_groups
from lib.optim.adamwadv import AdamWAdv
from lib.optim.adamwprune import AdamWPrune
from lib.optim.adamwspam import AdamWSpam
from lib.plugins import from_flags, module_names, part_module

__all__ = [
    "OptimizerConfig",
    "build_optimizer",
    "optimizer_config",
    "optimizer_config_class",
    "optimizer_module",
    "optimizer_names",
    "param_groups",
    "AdamWAdv",
    "AdamWPrune",
    "AdamWSpam",
]


def optimizer_names():
    """Every --optimizer value, one per module of this package (sorted)."""
    return module_names(sys.modules[__name__])


def optimizer_module(name):
    """The module of optimizer `name` (imported on first use)."""
    return part_module(sys.modules[__name__], name, "--optimizer")


def optimizer_config_class(name):
    """The Config dataclass of optimizer `name` (its own knobs)."""
    return optimizer_module(name).Config


def optimizer_config(name, flags):
    """optimizer `name`'s Config, its fields taken from `flags` (a dict of
    parsed flags, e.g. vars(args)); ValueError when a value is invalid."""
    return from_flags(optimizer_config_class(name), flags)


@dataclass(frozen=True)
class OptimizerConfig:
    """The settings every optimizer takes; fields named after their flags.
    A resumed run keeps its optimizer (lib/plugins.fixed_on_resume): the
    saved state is that optimizer's."""

    optimizer: str = field(metadata={"fixed_on_resume": True})
    learning_rate: float
    weight_decay: float
    beta1: float
    beta2: float

    def __post_init__(self):
        optimizer_module(self.optimizer)  # ValueError naming the valid ones
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ValueError(f"--learning-rate must be > 0, not {self.learning_rate}")
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            raise ValueError(f"--weight-decay must be >= 0, not {self.weight_decay}")
        for flag, beta in (("--beta1", self.beta1), ("--beta2", self.beta2)):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"{flag} must be in [0, 1), not {beta}")

    @property
    def betas(self):
        return (self.beta1, self.beta2)

    @classmethod
    def from_flags(cls, flags):
        """The settings from `flags`, a dict of parsed flags (e.g. vars(args))."""
        return from_flags(cls, flags)


def build_optimizer(model, settings, config):
    """Optimizer settings.optimizer over model's parameters.

    `config` is that optimizer's Config (optimizer_config()).
    """
    module = optimizer_module(settings.optimizer)
    if not isinstance(config, module.Config):
        raise ValueError(
            f"--optimizer {settings.optimizer} takes a {module.__name__}.Config, "
            f"not a {type(config).__module__}.{type(config).__qualname__}"
        )
    groups = getattr(module, "param_groups", param_groups)  # muon splits the parameters its own way
    return module.build(groups(model, settings.weight_decay), settings, config)
