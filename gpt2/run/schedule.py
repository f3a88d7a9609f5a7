"""Learning-rate schedules, one function per --lr-schedule value (SCHEDULES).

Every schedule warms up linearly over --warmup-iters, and ends at --min-lr by
step decay_iters (--lr-decay-iters, 0 meaning --max-iters); they differ in
between:

  cosine    half a cosine from the peak down to min-lr (GPT-3, nanoGPT; the default)
  wsd       warmup-stable-decay (Hägele et al., 2024; torchtitan, modded-nanogpt):
            the peak until the last --lr-decay-fraction of decay_iters, then
            down to min-lr along --lr-decay-shape: linear, or 1-sqrt
            (lr = min + (peak - min) * (1 - sqrt(p)), p the fraction of the decay done)
  constant  the peak after warmup, for good

The loop builds one with build_schedule(training) and calls it with the
step number; it writes the value into every parameter group before each
optimizer step, so any optimizer follows it.  A new schedule is a function
of (iteration, *, max_lr, min_lr, warmup_iters, decay_iters, decay_fraction,
decay_shape) added to SCHEDULES, and its entry LR_SCHEDULE_<NAME> in
gpt2/Kconfig's `choice LR_SCHEDULE`.
"""

import functools
import math

DECAY_SHAPES = {"linear": lambda p: 1.0 - p, "1-sqrt": lambda p: 1.0 - math.sqrt(p)}


def _warmup(iteration, max_lr, warmup_iters):
    # (it + 1): the very first step already moves, at max_lr / (warmup + 1).
    return max_lr * (iteration + 1) / (warmup_iters + 1)


def learning_rate(iteration, *, max_lr, min_lr, warmup_iters, decay_iters, **_):
    """Cosine: the learning rate for optimizer step `iteration` (0-based).

    Rises linearly over `warmup_iters` steps, follows half a cosine from
    `max_lr` down to `min_lr` until step `decay_iters`, then stays at `min_lr`.
    A warmup at least as long as the decay just means the run never leaves
    warmup's ramp before dropping to the floor, never a division by zero.
    """
    if iteration < warmup_iters:
        return _warmup(iteration, max_lr, warmup_iters)
    if iteration >= decay_iters:
        return min_lr
    progress = (iteration - warmup_iters) / (decay_iters - warmup_iters)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (max_lr - min_lr)


def warmup_stable_decay(iteration, *, max_lr, min_lr, warmup_iters, decay_iters, decay_fraction, decay_shape):
    """WSD: warmup, `max_lr` until the decay starts at
    decay_iters - round(decay_fraction * decay_iters), then DECAY_SHAPES[decay_shape]
    down to `min_lr`, reached at `decay_iters` and kept after it.  A
    warmup that runs into the decay hands over to it."""
    decay_start = decay_iters - round(decay_fraction * decay_iters)
    if iteration < warmup_iters and iteration < decay_start:
        return _warmup(iteration, max_lr, warmup_iters)
    if iteration >= decay_iters:
        return min_lr
    if iteration < decay_start:
        return max_lr
    progress = (iteration - decay_start) / (decay_iters - decay_start)
    return min_lr + DECAY_SHAPES[decay_shape](progress) * (max_lr - min_lr)


def constant(iteration, *, max_lr, warmup_iters, **_):
    """Warmup, then `max_lr` for good (min-lr and the decay unused)."""
    return _warmup(iteration, max_lr, warmup_iters) if iteration < warmup_iters else max_lr


SCHEDULES = {"cosine": learning_rate, "wsd": warmup_stable_decay, "constant": constant}


def build_schedule(training, max_lr):
    """iteration -> learning rate, for a TrainingConfig (gpt2/configs.py)
    and the peak `max_lr` (LEARNING_RATE, the optimizer's)."""
    return functools.partial(
        SCHEDULES[training.lr_schedule],
        max_lr=max_lr,
        min_lr=training.min_lr,
        warmup_iters=training.warmup_iters,
        decay_iters=training.decay_iters,
        decay_fraction=training.lr_decay_fraction,
        decay_shape=training.lr_decay_shape,
    )
