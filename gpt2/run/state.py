"""What a run has done so far: the counters a checkpoint saves besides the
parts' own states (gpt2/run/checkpoint.py) and --resume restores.

Iterations count optimizer steps done: "iter 100" and "eval 100" come after
the 100th step, and a checkpoint at 100 resumes into step 101.  The random
generators are saved per rank beside this (the checkpoint's `rng`), since
each rank has its own.
"""

import math
from dataclasses import asdict, dataclass


@dataclass
class TrainState:
    iter_num: int = 0
    best_val_loss: float = math.inf
    training_time: float = 0.0  # seconds, summed over resumed sessions

    def state_dict(self):
        return asdict(self)

    def load_state_dict(self, state):
        self.iter_num = int(state["iter_num"])
        self.best_val_loss = float(state["best_val_loss"])
        self.training_time = float(state["training_time"])
