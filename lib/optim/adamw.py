"""adamw: torch AdamW (decoupled weight decay), the GPT-2 standard."""

from dataclasses import dataclass

import torch

from lib.optim._groups import kernel_choice


@dataclass(frozen=True)
class Config:
    """No knobs of its own."""


def build(groups, settings, config):
    return torch.optim.AdamW(groups, lr=settings.learning_rate, betas=settings.betas, **kernel_choice(groups))
