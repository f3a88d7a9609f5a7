"""Experiments: sweeps, reports and reproductions."""
