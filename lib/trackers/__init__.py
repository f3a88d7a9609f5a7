"""Experiment tracking: one interface, one module per backend, a journal.

    trackers = open_trackers(args.tracker, project=..., run_name=..., config=vars(args), out_dir=args.out_dir)
    trackers.log({"train/loss": 3.2, "train/lr": 6e-4}, step=iter_num)
    trackers.summary({"best_val_loss": 3.1, ...})
    trackers.finish()

Backends (trackio, wandb) are imported only when asked for; see docs/tracking.md.
"""

from lib.trackers.base import (
    Tracker,
    TrackerError,
    Trackers,
    null_trackers,
)
from lib.trackers.registry import TRACKERS, open_trackers, parse_tracker_names

__all__ = [
    "TRACKERS",
    "Tracker",
    "TrackerError",
    "Trackers",
    "null_trackers",
    "open_trackers",
    "parse_tracker_names",
]
