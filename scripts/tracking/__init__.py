"""Tracker tools: the Trackio dashboard, W&B sync, journal replay."""
