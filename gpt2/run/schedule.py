"""Learning-rate schedule: linear warmup, then cosine decay to a floor.

The same shape as GPT-3 and nanoGPT use.  The loop writes the value into every
parameter group before each optimizer step, so any optimizer follows it.
"""

import math


def learning_rate(iteration, *, max_lr, min_lr, warmup_iters, decay_iters):
    """Learning rate for optimizer step `iteration` (0-based).

    Rises linearly over `warmup_iters` steps, follows half a cosine from
    `max_lr` down to `min_lr` until step `decay_iters`, then stays at `min_lr`.
    A warmup at least as long as the decay just means the run never leaves
    warmup's ramp before dropping to the floor, never a division by zero.
    """
    if iteration < warmup_iters:
        # (it + 1): the very first step already moves, at max_lr / (warmup + 1).
        return max_lr * (iteration + 1) / (warmup_iters + 1)
    if iteration >= decay_iters:
        return min_lr
    progress = (iteration - warmup_iters) / (decay_iters - warmup_iters)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (max_lr - min_lr)
