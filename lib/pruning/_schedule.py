"""The pruning schedule: target sparsity per iteration, and when masks are recomputed."""

from dataclasses import dataclass


@dataclass(frozen=True)
class PruningSchedule:
    """Cubic ramp of Zhu & Gupta (2017); see lib/pruning/__init__.py.

    Built by PruningConfig.schedule(), which has checked the values.
    """

    target_sparsity: float
    warmup: int
    ramp_iters: int
    interval: int

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
