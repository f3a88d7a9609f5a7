"""Benchmark training speed, tracker overhead and data preparation: one table.

    make bench                         # the full set below (about 3 1/2 minutes on 2 cores)
    make bench ARGS="--quick"          # tiny sizes, about 25 s (the CI smoke test)
    python -m scripts.bench.bench --json bench.json

The fixed set of measurements, in this order (full mode; --quick runs the
same kinds on a 2-layer, 32-wide model with fewer steps):

  peak     float32 products of 1024x1024 and 2048x2048 matrices through
           torch.mm (BLAS) and through oneDNN (gpt2/cpu/matmul.py), measured
           before each training row and twice more after them; the best of
           all is the CPU peak every CPU MFU is measured against.
  train    cpu-small: 4 layers, 4 heads, 256 wide, block 128, batch 8,
           float32, no compile (the CPU goal), with --cpu-matmul's default
           (auto); the same with BLAS matmuls, and with the plain
           full-logits loss; the Kconfig defaults (what `make train` runs).
           On CUDA instead: GPT-2 124M, block 1024, batch 16, bfloat16,
           torch.compile, against the GPU's dense bf16 peak (gpt2/run/mfu.py).
  tracker  the Kconfig default model with --tracker none, trackio and wandb
           (offline), logging every LOG_INTERVAL steps as train.py does; one
           fresh process each, 3 rounds of none, trackio, wandb, none.  The
           ratio is against the none runs of the same round (median over
           rounds); the time inside log() and the start / finish of each
           tracker are reported apart.
  monitor  what seeing inside a run costs per step, on the tracker rows'
           model at the Kconfig intervals: the gradient norm and clip
           fraction, peak memory, the loss-spike check, update-to-weight
           ratios (at --health-interval = EVAL_INTERVAL) and the text
           samples, each timed call by call (scripts/bench/monitors.py);
           off, none is called.
  data     GPT-2 tokenization (gpt2/data/tokenizer.py tokenize()) of Tiny
           Shakespeare repeated to 10 MB in memory: one process, and every
           core with the worker processes running (a long preparation's
           steady state) and freshly started.

MFU = model FLOPs per token (gpt2/model/gpt.py flops_per_token(): 6N + attention,
N counting all 50,304 rows of the tied token matrix, which the output layer
multiplies) x tokens/s / peak.  Each training row runs gpt2/train.py's own
train_step() in a fresh process (scripts/bench/step.py): ms/iter is the
median step after a warm-up, peak memory the process's peak resident set
(CPU) or torch's peak allocation (GPU).  Numbers are never asserted by the
tests; docs/benchmarks.md records a run and what it showed.
"""

import argparse
import json
import os
import shlex
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from gpt2.data.prepare import DataError, ensure_prepared
from gpt2.data.sources import find_shakespeare
from gpt2.train import no_log
from scripts.bench.report import evaluate_goals, format_report
from scripts.bench.rows import (BenchError, Workspace, data_rows, monitor_measurement_rows, peak_row, set_cpu_mfu,
                                tracker_rows, train_rows)
from scripts.bench.system import machine, matmul_peak

REPO_ROOT = Path(__file__).resolve().parents[2]

CPU = ("--device", "cpu", "--dtype", "float32", "--no-compile")
# The ablation of gpt2/cpu/matmul.py: torch's own matrix multiplies.
BLAS = ("--cpu-matmul", "blas")
SMALL = ("--model", "custom", "--n-layer", "4", "--n-head", "4", "--n-embd", "256", "--block-size", "128",
         "--batch-size", "8")  # fmt: skip
TINY = ("--model", "custom", "--n-layer", "2", "--n-head", "2", "--n-embd", "32", "--block-size", "32",
        "--batch-size", "4")  # fmt: skip
# 16 x 1,024 = 16,384 tokens a step: comfortably inside an 80 GB H100 with
# the full bf16 logits (nanoGPT's batch 12 fits a 40 GB A100).
# Each block recomputed in the backward pass: the memory it saves, the time it costs.
RECOMPUTE = ("--activation-checkpointing",)
GPT2_124M = ("--device", "cuda", "--dtype", "bfloat16", "--compile", "--model", "gpt2", "--block-size", "1024",
             "--batch-size", "16")  # fmt: skip


@dataclass(frozen=True)
class TrainRow:
    """One training configuration of the table."""

    name: str
    flags: tuple
    warmup: int
    iters: int
    chunked_loss: bool | None = None  # None: what gpt2/run/setup.py picks


@dataclass(frozen=True)
class Plan:
    """Sizes of one mode (full or quick) of the benchmark."""

    train: dict  # device -> [TrainRow]
    peak_seconds: float
    tracker_flags: tuple
    tracker_warmup: int
    tracker_iters: int
    tracker_log_interval: int | None  # None: the Kconfig default
    tracker_rounds: int
    monitor_iters: int  # steps before the health and sampling work is timed
    data_megabytes: float
    data_repeats: int


PLANS = {
    "full": Plan(
        train={
            "cpu": [
                TrainRow("cpu-small", CPU + SMALL, warmup=3, iters=15),
                TrainRow("cpu-small, BLAS matmuls", CPU + SMALL + BLAS, warmup=3, iters=15),
                TrainRow("cpu-small, full logits", CPU + SMALL, warmup=3, iters=15, chunked_loss=False),
                TrainRow("cpu-default (Kconfig)", CPU, warmup=3, iters=15),
                TrainRow("cpu-default, activation checkpointing", CPU + RECOMPUTE, warmup=3, iters=15),
            ],
            "cuda": [TrainRow("gpu-gpt2-124M", GPT2_124M, warmup=10, iters=20),
                     TrainRow("gpu-gpt2-124M, activation checkpointing", GPT2_124M + RECOMPUTE, warmup=10, iters=20)],
        },
        peak_seconds=1.0,
        tracker_flags=CPU,
        tracker_warmup=3,
        tracker_iters=40,
        tracker_log_interval=None,
        tracker_rounds=3,
        monitor_iters=5,
        data_megabytes=10,
        data_repeats=5,
    ),
    "quick": Plan(
        train={
            "cpu": [
                TrainRow("cpu-tiny", CPU + TINY, warmup=2, iters=5),
                TrainRow("cpu-tiny, BLAS matmuls", CPU + TINY + BLAS, warmup=2, iters=5),
                TrainRow("cpu-tiny, full logits", CPU + TINY, warmup=2, iters=5, chunked_loss=False),
                TrainRow("cpu-tiny, activation checkpointing", CPU + TINY + RECOMPUTE, warmup=2, iters=5),
            ],
            "cuda": [TrainRow("gpu-tiny", ("--device", "cuda", "--dtype", "bfloat16", "--no-compile") + TINY, 2, 5)],
        },
        peak_seconds=0.1,
        tracker_flags=CPU + TINY,
        tracker_warmup=1,
        tracker_iters=6,
        tracker_log_interval=2,
        tracker_rounds=1,
        monitor_iters=2,
        data_megabytes=1,
        data_repeats=1,
    ),
}


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, few steps: under a minute (CI)")
    parser.add_argument("--json", metavar="FILE", help="also write every number to FILE as JSON")
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="device of the training rows (default: cuda when available, else cpu)",
    )
    parser.add_argument(
        "--input",
        metavar="FILE",
        type=Path,
        default=None,
        help="Tiny Shakespeare text (default: $GPT2LAB_SHAKESPEARE, data/shakespeare/input.txt, "
        "../shared/data/tinyshakespeare/input.txt, else downloaded once)",
    )
    return parser


def scratch_environment(scratch):
    """The measurement processes' environment: trackers and hubs offline,
    writing into `scratch`, never into the user's home."""
    env = dict(os.environ)
    # Each measurement starts its own wandb-core, as a training run does,
    # rather than joining one an in-process wandb run may have exported.
    env.pop("WANDB_SERVICE", None)
    env.update(WANDB_MODE="offline", WANDB_SILENT="true", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    for name in ("TRACKIO_DIR", "WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "HF_HOME"):
        folder = scratch / name.lower()
        folder.mkdir(parents=True, exist_ok=True)
        env[name] = str(folder)
    return env


def run_benchmark(args, command):
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise BenchError("--device cuda: CUDA is not available on this machine; use --device cpu")
    if args.input is None:
        try:
            args.input = find_shakespeare()
        except DataError as e:
            raise BenchError(str(e)) from None
    if not args.input.is_file():
        raise BenchError(f"--input {args.input}: no such file; point --input at Tiny Shakespeare's input.txt")
    mode = "quick" if args.quick else "full"
    plan = PLANS[mode]
    report = {"mode": mode, "command": command, "machine": machine(device)}
    with tempfile.TemporaryDirectory(prefix="gpt2lab-bench-") as scratch:
        scratch = Path(scratch)
        try:
            ensure_prepared("shakespeare", scratch / "data", input_path=str(args.input), log=no_log)
        except DataError as e:
            raise BenchError(str(e)) from None
        data_flags = ("--dataset", "shakespeare", "--data-dir", str(scratch / "data"), "--data-input", str(args.input))
        workspace = Workspace(scratch=scratch, env=scratch_environment(scratch), data_flags=data_flags)
        peaks = []
        rows = train_rows(plan, device, workspace, peaks)
        peaks.append(matmul_peak(plan.peak_seconds))
        rows += tracker_rows(plan, workspace)
        rows += monitor_measurement_rows(plan, workspace)
        rows += data_rows(plan, args.input)
        peaks.append(matmul_peak(plan.peak_seconds))
    # Against the best peak of the run: a slow spell of the machine (this
    # one drifts by ~5% over minutes) during one measurement must not make
    # every MFU look higher.
    peak = peak_row(peaks)
    set_cpu_mfu(rows, peak["gflops"] * 1e9)
    report["peak_flops"] = peak["gflops"] * 1e9
    report["machine"]["load_average_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    report["rows"] = [peak, *rows]
    report["goals"] = evaluate_goals(report["rows"], quick=args.quick)
    return report


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    command = shlex.join(["python", "-m", "scripts.bench.bench", *argv])
    try:
        report = run_benchmark(args, command)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(format_report(report), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
