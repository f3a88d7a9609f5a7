"""One benchmark measurement in a fresh process: training steps of one
configuration, optionally with a tracker, timed and printed as JSON.

scripts/bench/bench.py starts this once per row of its table, so every row has its
own peak memory and its own allocator state, and a tracker's threads and
helper processes never touch another row.  The steps are the training's
own: the run is built by gpt2/run/setup.py build() and each step is the
Trainer's train_step() (gpt2/run/trainer.py); around them, the loop's
logging minus evaluation and checkpoints, which are not part of a step.

    python -m scripts.bench.step '{"flags": [...], "warmup": 3, "iters": 10}' --json out.json
"""

import argparse
import dataclasses
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from gpt2 import cli
from gpt2.configs import RunConfig
from gpt2.cpu import matmul as cpu_matmul
from gpt2.cpu.fast_paths import use_cpu_fast_paths
from gpt2.run import distributed
from gpt2.run.precision import resolve_precision
from gpt2.data.prepare import data_fingerprint
from gpt2.run.setup import build, open_run_trackers, plain_flags, run_facts
from gpt2.train import no_log
from scripts.bench.monitors import measure_monitors


def synchronize(device):
    """Wait for queued GPU work, so a timer measures the work itself."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class TimedTrackers:
    """Wraps a run's Trackers, adding up the seconds spent in log()."""

    def __init__(self, trackers):
        self.trackers = trackers
        self.log_seconds = []

    def log(self, metrics, step):
        start = time.perf_counter()
        self.trackers.log(metrics, step)
        self.log_seconds.append(time.perf_counter() - start)

    def __getattr__(self, name):
        return getattr(self.trackers, name)


def timed_steps(run, warmup, iters, log_interval):
    """Step times in seconds of `iters` steps after `warmup` untimed ones
    (`run`: a Trainer).  With log_interval > 0, every log_interval-th step
    also reads the loss and logs as the loop does (inside the timed step)."""
    times = []
    for i in range(warmup + iters):
        lr = run.learning_rate()
        synchronize(run.device)
        start = time.perf_counter()
        loss = run.train_step(lr)
        run.state.iter_num += 1
        if log_interval and run.state.iter_num % log_interval == 0:
            run.report_progress(loss.item(), lr, times[-1] if times else 1.0)
        synchronize(run.device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def peak_memory_mb(device):
    """Peak memory of this process: GPU memory allocated by torch on CUDA,
    else the peak resident set size (Python, torch and data included)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


def measure(spec):
    """Run the steps `spec` describes; returns the measurement as a dict."""
    with tempfile.TemporaryDirectory(prefix="gpt2lab-bench-") as out_dir:
        args = cli.parse_args([*spec["flags"], "--out-dir", out_dir])
        cfg = RunConfig.from_flags(vars(args))
        precision = resolve_precision(cfg.system, log=no_log)
        dist = distributed.start(precision.device_type)
        flags, train_args = plain_flags(args), cli.command_line(args)
        run, _ = build(cfg, flags, precision, dist, no_log, train_args, trackers=False)
        if "chunked_loss" in spec:  # an ablation row: the other loss path, same matmuls
            use_cpu_fast_paths(run.raw_model, cpu_matmul.library_of(run.raw_model), spec["chunked_loss"])
        start = time.perf_counter()
        facts = run_facts(cfg, precision, dist, run.device, run.raw_model, data_fingerprint(run.batches.data_dir))
        trackers = TimedTrackers(open_run_trackers(cfg, dist, flags, train_args, facts, None))
        startup = time.perf_counter() - start
        run = dataclasses.replace(run, trackers=trackers)
        try:
            times = timed_steps(run, spec["warmup"], spec["iters"], spec.get("log_interval", 0))
            # Health and sampling work, timed call by call (scripts/bench/monitors.py).
            monitors = measure_monitors(run, repeats=20) if spec.get("monitors") else None
        finally:
            start = time.perf_counter()
            run.trackers.finish()
            finish = time.perf_counter() - start
    step = statistics.median(times)
    model = run.raw_model
    return {
        "ms_per_iter": step * 1000,
        "step_times_ms": [t * 1000 for t in times],
        "tokens_per_iter": run.tokens_per_iter,
        "tokens_per_sec": run.tokens_per_iter / step,
        "flops_per_token": model.flops_per_token(),
        "parameters": model.num_parameters(),
        "peak_memory_mb": peak_memory_mb(run.device),
        "device": str(run.device),
        "dtype": precision.dtype,
        "compile": precision.compile,
        # What the model computed with, read from the model itself.
        "chunked_loss": model.output_loss is not None,
        "activation_checkpointing": model.config.activation_checkpointing,
        "cpu_matmul": cpu_matmul.library_of(model) if run.device.type == "cpu" else None,
        "threads": torch.get_num_threads(),
        # CPU: 0.2 s per library; CUDA: the data sheet (gpt2/run/mfu.py)
        "setup_peak_flops": run.peak.flops if run.peak else None,
        "tracker": cfg.tracking.tracker,
        "tracker_startup_s": startup,
        "tracker_finish_s": finish,
        "log_seconds": run.trackers.log_seconds,
        "seconds_in_log": sum(run.trackers.log_seconds),
        "seconds_in_steps": sum(times),
        "monitors": monitors,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spec", help="JSON object: flags (train.py flags), warmup, iters, log_interval, chunked_loss, "
                        "monitors")
    parser.add_argument("--json", required=True, metavar="FILE", help="where to write the result")
    args = parser.parse_args(argv)
    result = measure(json.loads(args.spec))
    # A file, not stdout: Trackio and wandb print to stdout themselves.
    Path(args.json).write_text(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
