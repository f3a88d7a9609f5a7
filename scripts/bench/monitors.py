"""What seeing inside a run costs: the per-call time of each thing
gpt2/run/health.py and gpt2/run/samples.py add to training, measured in
scripts/bench/step.py's process on its run (the model of the row), and the
rows of `make bench` that turn them into a cost per step at the Kconfig
intervals.

Each is timed directly (median of many calls) rather than as a difference of
two step times: the step time of this machine wanders by a few % between
runs, far more than these costs.  Off, none of them is called (the loop
checks an int), so their cost off is zero by construction.
"""

import statistics
import time

import torch


def _median_seconds(call, repeats, device):
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        call()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure_monitors(run, repeats):
    """{name: seconds per call} of the health and sampling work on `run`
    (built by gpt2/run/setup.py setup(), trained a few steps)."""
    health, device = run.health, run.device
    norm = torch.tensor(0.5, device=device)

    def interval():
        health.record_grad_norm(norm)
        health.interval_metrics()

    def update_ratios():
        health.before_step()
        health.update_ratios()

    seconds = {
        "record_grad_norm": _median_seconds(lambda: health.record_grad_norm(norm), repeats * 10, device),
        "interval_metrics": _median_seconds(interval, repeats, device),
        "peak_memory": _median_seconds(health._interval_peak_memory, repeats, device),
        "loss_spike": _median_seconds(lambda: health.loss_spike(3.0), repeats * 10, device),
        "update_ratios": _median_seconds(update_ratios, max(repeats // 4, 2), device),
    }
    if run.sampler is not None:
        seconds["sample"] = _median_seconds(lambda: run.sampler.sample(run.raw_model, run.device), 3, device)
    return seconds


def monitor_rows(result, flags):
    """The rows of `make bench` from one scripts/bench/step.py result with
    "monitors"; `flags`: that run's parsed train.py flags (the intervals)."""
    seconds, step_ms = result["monitors"], result["ms_per_iter"]
    log_interval, eval_interval = flags.log_interval, flags.eval_interval
    ms = {name: 1000 * value for name, value in seconds.items()}
    grad_per_call = max(ms["interval_metrics"] - ms["peak_memory"] - ms["record_grad_norm"], 0.0)
    costs = [
        ("monitor: grad norm + clip fraction", ms["record_grad_norm"] + grad_per_call / log_interval,
         f"always on (with --grad-clip): {ms['record_grad_norm'] * 1000:.0f} us/step on the device + "
         f"{grad_per_call:.3f} ms every {log_interval} iters"),
        ("monitor: peak memory", ms["peak_memory"] / log_interval,
         f"always on: {ms['peak_memory']:.3f} ms every {log_interval} iters"),
        ("monitor: loss-spike check", ms["loss_spike"] / log_interval,
         f"LOSS_SPIKE_FACTOR > 0: {ms['loss_spike'] * 1000:.0f} us every {log_interval} iters; 0 when off"),
        ("monitor: update ratios", ms["update_ratios"] / eval_interval,
         f"{ms['update_ratios']:.1f} ms per logged step, shown at --health-interval {eval_interval}; "
         "off by default: 0"),
    ]
    if "sample" in ms:
        iters = flags.max_iters
        samples_per_run = len({i for i in range(0, iters + 1, eval_interval * flags.sample_interval)} | {iters})
        costs.append((
            "monitor: text samples", ms["sample"] * samples_per_run / iters,
            f"{ms['sample']:.0f} ms per sample of {flags.sample_training_tokens} tokens, {samples_per_run} "
            f"samples in {iters} iters (--sample-interval {flags.sample_interval}); --sample-interval 0: 0",
        ))
    rows = []
    for name, per_step_ms, note in costs:
        share = per_step_ms / step_ms
        rows.append({"name": name, "kind": "monitor", "ms_per_iter": per_step_ms, "share": share,
                     "note": f"{100 * share:.3f}% of a {step_ms:.1f} ms step; {note}"})
    return rows
