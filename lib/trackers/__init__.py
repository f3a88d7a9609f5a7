"""Experiment tracking: one interface, one module per backend, a journal.

    trackers = open_trackers(TrackingConfig.from_flags(flags), config=flags, out_dir=out_dir)
    trackers.log({"train/loss": 3.2, "train/lr": 6e-4}, step=iter_num)
    trackers.summary({"best_val_loss": 3.1, ...})
    trackers.finish()

Backends are modules lib/trackers/<name>_tracker.py found by registry.py;
their packages (trackio, wandb) are imported only when asked for.  See
docs/tracking.md.
"""

from lib.trackers.base import (
    Tracker,
    TrackerError,
    Trackers,
    null_trackers,
)
from lib.trackers.registry import TrackingConfig, backend_names, journal_state, open_trackers, parse_tracker_names

__all__ = [
    "Tracker",
    "TrackingConfig",
    "backend_names",
    "journal_state",
    "TrackerError",
    "Trackers",
    "null_trackers",
    "open_trackers",
    "parse_tracker_names",
]
