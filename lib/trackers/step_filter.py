"""Which (metric, step) points a backend may still write, so none appears twice.

A resumed run re-runs the iterations after its last checkpoint, and first
re-sends the journaled points a backend lost in the kill; both would repeat
points the backend already holds.  A backend builds one StepFilter from
what its run holds when it opens (Trackio: the exact steps of every metric;
W&B: the first step its append-only history still accepts) and passes every
log call through `fresh()`, then `record()`s what the backend took.
"""

from bisect import bisect_left
from collections import Counter


class StepFilter:
    def __init__(self, stored=None, first_new_step=0):
        self._stored = stored or {}  # metric -> sorted steps held before this process
        self.first_new_step = first_new_step
        self._last_sent = {}  # metric -> last step this process sent
        self.sent = Counter()  # metric -> points this process sent

    def stored_count(self, key):
        return len(self._stored.get(key, ()))

    def _held(self, key, step):
        steps = self._stored.get(key)
        if not steps:
            return False
        i = bisect_left(steps, step)
        return i < len(steps) and steps[i] == step

    def fresh(self, metrics, step):
        """The part of `metrics` the backend does not hold at `step` yet.
        Within one process a metric's steps only grow."""
        if step < self.first_new_step:
            return {}
        return {
            key: value
            for key, value in metrics.items()
            if not self._held(key, step) and step > self._last_sent.get(key, -1)
        }

    def record(self, points, step):
        """Count `points` as written at `step` (after the backend took them)."""
        for key in points:
            self._last_sent[key] = step
        self.sent.update(points.keys())

    @property
    def points_sent(self):
        return sum(self.sent.values())
