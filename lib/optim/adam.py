"""adam: torch Adam; weight decay as an L2 term added to the gradient
(torch's coupled semantics; adamw decouples it)."""

from dataclasses import dataclass

import torch

from lib.optim._groups import kernel_choice


@dataclass(frozen=True)
class Config:
    """No knobs of its own."""


def build(groups, settings, config):
    return torch.optim.Adam(groups, lr=settings.learning_rate, betas=settings.betas, **kernel_choice(groups))
