"""The rows of `make bench`'s table: each measurement, run and turned into
a dict of numbers (scripts/bench/report.py formats them).  Training rows
run in fresh processes (scripts/bench/step.py); the matmul peak and the
tokenization throughput are measured here (scripts/bench/system.py)."""

import json
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from gpt2 import cli
from scripts.bench.monitors import monitor_rows
from lib.trackers import backend_names
from gpt2.cpu.setup import library_name
from gpt2.data.tokenizer import close_workers, default_workers
from scripts.bench.system import PEAK_SIZES, corpus_text, matmul_peak, time_tokenize
from lib.errors import UserError

REPO_ROOT = Path(__file__).resolve().parents[2]
TRACKERS = ("none", *backend_names())
LIBRARY_NAMES = {"blas": "torch.mm (BLAS)", "onednn": "oneDNN"}


class BenchError(UserError):
    """A measurement could not run; the message is one line."""


@dataclass(frozen=True)
class Workspace:
    """Where the measurement processes run: a scratch folder, their
    environment, and the data flags every training row shares."""

    scratch: Path
    env: dict
    data_flags: tuple


def run_step_worker(name, spec, workspace, timeout=None):
    """scripts/bench/step.py in a fresh process; its result dict.  With
    `timeout` (seconds), a worker still running then is killed: BenchError."""
    result_path = workspace.scratch / "step.json"
    result_path.unlink(missing_ok=True)
    command = [sys.executable, "-m", "scripts.bench.step", json.dumps(spec), "--json", str(result_path)]
    try:
        proc = subprocess.run(command, cwd=REPO_ROOT, env=workspace.env, capture_output=True, text=True,
                              timeout=timeout)  # fmt: skip
    except subprocess.TimeoutExpired:
        raise BenchError(f"{name} was still running after {timeout:.0f} s and was stopped") from None
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines() or ["no output"]
        raise BenchError(f"{name} failed (exit {proc.returncode}): {lines[-1]}")
    return json.loads(result_path.read_text())


def train_rows(plan, device, workspace, peaks):
    """The training rows; a matmul peak is measured before each (appended
    to `peaks`), so the peak is sampled all through the run."""
    rows = []
    for row in plan.train[device]:
        peaks.append(matmul_peak(plan.peak_seconds))
        flags = [*row.flags, "--tracker", "none", *workspace.data_flags]
        spec = {"flags": flags, "warmup": row.warmup, "iters": row.iters}
        if row.chunked_loss is not None:
            spec["chunked_loss"] = row.chunked_loss
        rows.append(training_row(row.name, "train", run_step_worker(row.name, spec, workspace)))
    return rows


def training_row(name, kind, result):
    """A table row from a worker's result.  GPU rows get their MFU against
    the card's data-sheet peak here, CPU rows once the run's matmul peak is
    known (set_cpu_mfu)."""
    peak = result["setup_peak_flops"] if result["device"].startswith("cuda") else None
    achieved = result["flops_per_token"] * result["tokens_per_sec"]
    loss = "chunked loss" if result["chunked_loss"] else "full-logits loss"
    if result.get("activation_checkpointing"):
        loss += ", activation checkpointing"
    matmul = f", {library_name(result['cpu_matmul'])} matmuls" if result.get("cpu_matmul") else ""
    gpu_without_peak = result["device"].startswith("cuda") and not peak
    unknown = ", MFU unknown (no peak for this GPU in gpt2/run/mfu.py)" if gpu_without_peak else ""
    return {
        "name": name,
        "kind": kind,
        "ms_per_iter": result["ms_per_iter"],
        "tokens_per_sec": result["tokens_per_sec"],
        "gflops": achieved / 1e9,
        "mfu": achieved / peak if peak else None,
        "peak_memory_mb": result["peak_memory_mb"],
        "note": f"{result['parameters'] / 1e6:.1f}M params, {result['tokens_per_iter']:,} tok/iter, "
        f"{result['dtype']}{' compiled' if result['compile'] else ''}{matmul}, {loss}, {result['threads']} threads"
        f"{unknown}",
        "detail": result,
    }


def tracker_rows(plan, workspace):
    """Identical runs with each tracker.  Each round runs none, trackio,
    wandb, none again, one process each: a tracker's ratio is against the
    mean of the two none runs around it, so a slow spell of the machine
    (it drifts by several % over minutes) cancels out, and the two none
    runs' own difference shows the noise left."""
    interval = plan.tracker_log_interval or cli.parse_args([]).log_interval
    order = ("none", *[name for name in TRACKERS if name != "none"], "none")
    rounds = []
    for _ in range(plan.tracker_rounds):
        runs = []
        for name in order:
            flags = [*plan.tracker_flags, "--tracker", name, "--wandb-offline",
                     "--trackio-dir", workspace.env["TRACKIO_DIR"], *workspace.data_flags]  # fmt: skip
            spec = {"flags": flags, "warmup": plan.tracker_warmup, "iters": plan.tracker_iters,
                    "log_interval": interval}  # fmt: skip
            runs.append(run_step_worker(f"tracker {name}", spec, workspace))
        rounds.append(runs)
    baselines = [(runs[0]["ms_per_iter"] + runs[-1]["ms_per_iter"]) / 2 for runs in rounds]
    rows = []
    for name in TRACKERS:
        if name == "none":  # the reference
            runs_of = [run for runs in rounds for run in (runs[0], runs[-1])]
            ratio = 1.0
        else:
            runs_of = [runs[order.index(name)] for runs in rounds]
            ratio = statistics.median(run["ms_per_iter"] / base for run, base in zip(runs_of, baselines))
        median_run = sorted(runs_of, key=lambda r: r["ms_per_iter"])[len(runs_of) // 2]
        row = training_row(f"tracker {name}" + (" (offline)" if name == "wandb" else ""), "tracker", median_run)
        log_calls = [seconds for run in runs_of for seconds in run["log_seconds"]]
        row.update(
            ratio=ratio,
            log_ms_per_call=1000 * statistics.median(log_calls),
            log_share=sum(r["seconds_in_log"] for r in runs_of) / sum(r["seconds_in_steps"] for r in runs_of),
            startup_s=statistics.median(r["tracker_startup_s"] for r in runs_of),
            finish_s=statistics.median(r["tracker_finish_s"] for r in runs_of),
            runs_ms_per_iter=[r["ms_per_iter"] for r in runs_of],
        )
        row["note"] = (
            f"x{row['ratio']:.3f} vs none; log() {row['log_ms_per_call']:.2f} ms/call every {interval} iters "
            f"= {100 * row['log_share']:.3f}% of step time; start {row['startup_s']:.2f} s, "
            f"finish {row['finish_s']:.2f} s"
        )
        rows.append(row)
    # The noise: how far the two none runs of a round lie apart.
    rows[0]["noise"] = statistics.median(
        abs(runs[-1]["ms_per_iter"] - runs[0]["ms_per_iter"]) / runs[0]["ms_per_iter"] for runs in rounds
    )
    rows[0]["note"] += f"; its two runs per round differ by {100 * rows[0]['noise']:.1f}% (noise)"
    return rows


def monitor_measurement_rows(plan, workspace):
    """The cost of the health numbers and text samples (scripts/bench/monitors.py)
    on the tracker rows' model, at its Kconfig intervals."""
    flags = [*plan.tracker_flags, "--tracker", "none", *workspace.data_flags]
    spec = {"flags": flags, "warmup": plan.tracker_warmup, "iters": plan.monitor_iters, "monitors": True}
    result = run_step_worker("monitors", spec, workspace)
    return monitor_rows(result, cli.parse_args(flags))


def data_rows(plan, corpus):
    """Tokenization throughput on one process and on every core, repeat by
    repeat in turn; on every core both with freshly started worker
    processes (what a short preparation sees) and with running ones (the
    steady state of a long one, which the goal is about)."""
    text = corpus_text(corpus, plan.data_megabytes)
    megabytes = len(text.encode("utf-8")) / 1e6
    cores = default_workers()
    timings = {"single": [], "fresh": [], "running": []}
    try:
        for _ in range(plan.data_repeats):
            timings["single"].append(time_tokenize(text, 1, fresh_workers=False))
            if cores > 1:
                timings["fresh"].append(time_tokenize(text, cores, fresh_workers=True))
                timings["running"].append(time_tokenize(text, cores, fresh_workers=False))
    finally:
        close_workers()
    speed = {kind: megabytes / statistics.median(s for s, _ in runs) for kind, runs in timings.items() if runs}
    tokens = timings["single"][0][1]
    single = {
        "name": "data: tokenize, 1 process",
        "kind": "data",
        "workers": 1,
        "mb_per_sec": speed["single"],
        "tokens_per_sec": tokens * speed["single"] / megabytes,
        "note": f"{megabytes:.1f} MB of text (Tiny Shakespeare repeated), median of {plan.data_repeats}",
    }
    if cores == 1:
        return [single]
    parallel = {
        "name": f"data: tokenize, {cores} processes",
        "kind": "data",
        "workers": cores,
        "mb_per_sec": speed["running"],
        "tokens_per_sec": tokens * speed["running"] / megabytes,
        "speedup": speed["running"] / speed["single"],
        "fresh_mb_per_sec": speed["fresh"],
        "fresh_speedup": speed["fresh"] / speed["single"],
        "note": f"{speed['running'] / speed['single']:.2f}x one process with the workers running; "
        f"{speed['fresh']:.1f} MB/s = {speed['fresh'] / speed['single']:.2f}x when the run starts them",
    }
    return [single, parallel]


def set_cpu_mfu(rows, peak):
    """MFU of the CPU rows, against `peak` (FLOP/s)."""
    for row in rows:
        if row.get("detail", {}).get("device") == "cpu":
            row["mfu"] = row["gflops"] * 1e9 / peak


def peak_row(peaks):
    """The row of the matmul peak: the best of `peaks` (a list of
    {library: FLOP/s}, one per measurement through the run)."""
    by_library = {name: [p[name] for p in peaks] for name in peaks[0]}
    ranges = "; ".join(
        f"{LIBRARY_NAMES[name]} {min(values) / 1e9:.0f}-{max(values) / 1e9:.0f}" for name, values in by_library.items()
    )
    return {
        "name": "peak: float32 matmul",
        "kind": "peak",
        "gflops": max(max(p.values()) for p in peaks) / 1e9,
        "measurements": peaks,
        "note": f"best of {len(peaks)} measurements through the run ({ranges} GFLOP/s) of "
        f"{' and '.join(f'{n}x{n}' for n in PEAK_SIZES)} matrices",
    }
