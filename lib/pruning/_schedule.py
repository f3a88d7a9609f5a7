"""The pruning schedule: target sparsity per iteration (and per layer), and
when masks are recomputed."""

from dataclasses import dataclass

# progress p in [0, 1] -> the fraction of the target reached.
RAMPS = {
    # Zhu & Gupta (2017): fast while many weights are redundant, slow near
    # the target.  gpt2lab's schedule before --pruning-schedule (the default).
    "zhu-gupta": lambda p: 1.0 - (1.0 - p) ** 3,
    "linear": lambda p: p,
    # AdamWPrune's "cubic" (lib/optimizers.py at 0a0fda9, every variant):
    # progress^3, slow first and fast at the end, the mirror image of Zhu &
    # Gupta's although the source's comment says it matches them.
    "cubic": lambda p: p**3,
}

# AdamWPrune's layer-adaptive distribution (bitter4): layer i of n gets
# scale 0.7 + 0.6 * i / (n - 1) times the target, capped at 0.95.
LAYER_SCALE_FIRST, LAYER_SCALE_SPAN, LAYER_CAP = 0.7, 0.6, 0.95


@dataclass(frozen=True)
class PruningSchedule:
    """Sparsity 0 until `warmup`, then RAMPS[shape] over ramp_iters
    iterations, then target_sparsity; see lib/pruning/__init__.py.

    Built by PruningConfig.schedule(), which has checked the values.
    """

    target_sparsity: float
    warmup: int
    ramp_iters: int
    interval: int
    shape: str
    layer_adaptive: bool

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
        return self.target_sparsity * RAMPS[self.shape](progress)

    def layer_target(self, target, index, count):
        """The sparsity of prunable tensor `index` of `count` (module order)
        when the whole model is at `target`: `target` itself, or with
        layer_adaptive AdamWPrune's 0.7x (first) .. 1.3x (last), whose mean
        over the tensors is `target` (the cap aside)."""
        if not self.layer_adaptive:
            return target
        position = index / max(count - 1, 1)
        return min(LAYER_CAP, target * (LAYER_SCALE_FIRST + LAYER_SCALE_SPAN * position))

    def is_update(self, iter_num):
        if iter_num < self.warmup:
            return False
        return (iter_num - self.warmup) % self.interval == 0 or iter_num >= self.end
