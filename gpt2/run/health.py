"""What a run's numbers say about its health, beyond the loss: the gradient
norm and how often it was clipped, the update-to-weight ratio of each layer
group, peak memory, and loss spikes worth an alert.

Nothing here adds a pass over the gradients or a host-device sync per step:
  * train/grad_norm is the value clip_grad_norm_ returns anyway (the norm
    before clipping, of the whole model: under DDP the gradients are
    all-reduced before clipping, so every rank holds the global norm);
    train/clip_fraction counts, on the device, the steps whose norm was
    above --grad-clip.  Both are read with the loss, once per log interval.
  * health/update_ratio/<group> (every --health-interval steps; off by
    default) copies the weights before the optimizer step on those steps
    only: ||W_after - W_before|| / ||W_before|| per layer group.
  * sys/peak_memory_gb: CUDA's max_memory_allocated, reset every log
    interval; on the CPU the process's peak resident memory (VmHWM), reset
    through /proc/self/clear_refs where Linux allows it, else the peak since
    the process started.
"""

import math
import resource
import sys
from collections import deque
from pathlib import Path

import torch

# The loss-spike alert compares a logged loss with the mean of this many
# logged losses before it.
SPIKE_WINDOW = 10
GIB = 1024**3


def layer_group(name):
    """The layer group of a parameter name: embeddings, block.<i>, or final (ln_f)."""
    parts = name.split(".")
    if parts[:2] == ["transformer", "h"]:
        return f"block.{parts[2]}"
    if parts[1:2] in (["wte"], ["wpe"]) or parts[0] == "lm_head":
        return "embeddings"
    return "final"


class RunHealth:
    """The health numbers of one rank's run; train.py calls
    before_step/after_step around each optimizer step and interval_metrics
    at each log interval."""

    def __init__(self, model, device, *, grad_clip, health_interval, loss_spike_factor):
        self.device = device
        self.grad_clip = grad_clip
        self.health_interval = health_interval
        self.loss_spike_factor = loss_spike_factor
        self.groups = {}
        for name, parameter in model.named_parameters():  # tied weights appear once, as wte's
            self.groups.setdefault(layer_group(name), []).append(parameter)
        self._norm = None  # the last step's gradient norm (a device tensor)
        self._clipped = torch.zeros((), device=device, dtype=torch.int64)
        self._steps = 0
        self._before = None
        self._losses = deque(maxlen=SPIKE_WINDOW)
        self._run_peak_gb = 0.0  # the largest interval peak so far
        self._cpu_reset = device.type == "cpu" and _reset_cpu_peak()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

    # -- every step -------------------------------------------------------

    def record_grad_norm(self, norm):
        """The value clip_grad_norm_ returned (no sync: stays on the device);
        with clipping off (grad_clip 0) no step counts as clipped."""
        self._norm = norm
        if self.grad_clip > 0:
            self._clipped += (norm > self.grad_clip).to(torch.int64)
        self._steps += 1

    def wants_update_ratio(self, iter_num):
        """Whether the step after `iter_num` steps logs update ratios."""
        return self.health_interval > 0 and (iter_num + 1) % self.health_interval == 0

    @torch.no_grad()
    def before_step(self):
        """Copy the weights (only on the steps that log update ratios)."""
        self._before = {group: [p.detach().clone() for p in params] for group, params in self.groups.items()}

    @torch.no_grad()
    def update_ratios(self):
        """{health/update_ratio/<group>: ||W_after - W_before|| / ||W_before||}
        of the step since before_step (one sync, on those steps only)."""
        ratios = {}
        for group, params in self.groups.items():
            before = self._before[group]
            change = torch.sqrt(sum(((p - b).float() ** 2).sum() for p, b in zip(params, before)))
            size = torch.sqrt(sum((b.float() ** 2).sum() for b in before))
            ratios[group] = change / size.clamp_min(1e-12)
        self._before = None
        values = torch.stack(list(ratios.values())).tolist()
        return {f"health/update_ratio/{group}": value for group, value in zip(ratios, values)}

    # -- every log interval -------------------------------------------------

    def interval_metrics(self):
        """train/grad_norm (the last step's, before clipping),
        train/clip_fraction (share of the interval's steps that were
        clipped), sys/peak_memory_gb (this interval's peak); then a new
        interval starts."""
        metrics = {}
        if self._norm is not None:
            norm, clipped = torch.stack([self._norm.float(), self._clipped.float()]).tolist()
            metrics["train/grad_norm"] = norm
            metrics["train/clip_fraction"] = clipped / max(self._steps, 1)
            self._clipped.zero_()
            self._steps = 0
        metrics["sys/peak_memory_gb"] = self._interval_peak_memory()
        return metrics

    def _interval_peak_memory(self):
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device) / GIB
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            peak = _cpu_peak_bytes() / GIB
            if self._cpu_reset:
                self._cpu_reset = _reset_cpu_peak()
        self._run_peak_gb = max(self._run_peak_gb, peak)
        return peak

    @property
    def peak_memory_gb(self):
        """The run's peak so far (for the summary): the interval peaks and
        the current interval's, without starting a new interval."""
        if self.device.type == "cuda":
            current = torch.cuda.max_memory_allocated(self.device) / GIB
        else:
            current = _cpu_peak_bytes() / GIB
        return max(self._run_peak_gb, current)

    def loss_spike(self, loss):
        """A one-line description when `loss` is above loss_spike_factor x
        the mean of the last SPIKE_WINDOW logged losses, else None."""
        spike = None
        if self.loss_spike_factor > 0 and len(self._losses) == self._losses.maxlen and math.isfinite(loss):
            mean = sum(self._losses) / len(self._losses)
            if loss > self.loss_spike_factor * mean:
                spike = (f"train loss {loss:.4f} is {loss / mean:.1f}x the mean {mean:.4f} of the last "
                         f"{len(self._losses)} logged losses (--loss-spike-factor {self.loss_spike_factor:g})")
        self._losses.append(loss)
        return spike


def _cpu_peak_bytes():
    """Peak resident memory: VmHWM of /proc/self/status (resettable), or
    getrusage's lifetime peak where there is no /proc."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


def _reset_cpu_peak():
    """Reset VmHWM to the current resident size (Linux >= 4.0: writing 5 to
    /proc/self/clear_refs); False where that is not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def run_health(cfg, model, device):
    """The RunHealth of a training run (`cfg`: its RunConfig)."""
    return RunHealth(model, device, grad_clip=cfg.training.grad_clip,
                     health_interval=cfg.health.health_interval,
                     loss_spike_factor=cfg.health.loss_spike_factor)

