"""sgd: torch SGD with momentum, no Nesterov; weight decay as an L2 term."""

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Config:
    sgd_momentum: float

    def __post_init__(self):
        if not 0.0 <= self.sgd_momentum < 1.0:
            raise ValueError(f"--sgd-momentum must be in [0, 1), not {self.sgd_momentum}")


def build(groups, settings, config):
    return torch.optim.SGD(groups, lr=settings.learning_rate, momentum=config.sgd_momentum, nesterov=False)
