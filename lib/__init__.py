"""Reusable parts of gpt2lab: strict Kconfig loading, optimizers, pruning, trackers."""
