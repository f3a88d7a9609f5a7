"""The run: set-up, the training state, checkpoints, preemption, distributed helpers, health and samples."""
