"""The CUDA path on this machine's GPU, checked and measured in under 8 minutes.

    make gpu-check                          # prints each figure, writes gpu-check.json
    make gpu-check ARGS="--out run1.json --work-dir /tmp/gpu-check"

One line per check, in this order, and everything in gpu-check.json:

  gpu      name, count, compute capability, torch and CUDA (or ROCm) versions
  matmul   bf16 TFLOP/s of 8192 x 8192 products, and that as a fraction of
           the card's dense bf16 peak (gpt2/run/mfu.py's table; unknown card:
           no fraction)
  bench    `make bench ARGS="--device cuda"`'s training row: GPT-2 124M,
           bf16, torch.compile, batch 16 x 1,024: ms/iter, tokens/s, MFU
  preset   `make defconfig-gpt2-trackio` and `make train` (the scripts those
           targets run) for 300 steps on a local parquet made from Tiny
           Shakespeare (the preset's real
           settings, but 4 accumulation steps instead of 40 and 30 warm-up
           steps, so 300 steps fit the time): the loss goes down, and its
           points are in Trackio's database
  resume   the same run again, killed with SIGKILL right after its
           checkpoint at step 100, then --resume: the losses of steps 110 to
           300 against the uninterrupted run's (bitwise equal is not
           promised on a GPU, see README: the largest difference is shown)
  ddp      with 2 or more GPUs: the preset under torchrun, one process per
           GPU (at most 8), 50 steps

Without CUDA it says so in one line and exits 1 before anything else runs.
Exit status 0 when every check that ran passed.  docs/benchmarks.md says
where the figures go.
"""

import argparse
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

from gpt2.run.mfu import gpu_peak_flops
from gpt2.data.prepare import DataError
from lib.atomic import write_text_atomically
from scripts.bench.rows import BenchError
from lib.errors import UserError

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = REPO_ROOT.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"
PRESET = "gpt2"
TRACKER = "trackio"
STEPS = 300
KILL_AT = 100  # the first checkpoint (EVAL_INTERVAL below)
DDP_STEPS = 50
# The preset's settings but these: 12 x 1,024 x 4 = 49,152 tokens a step,
# so 300 steps take about a minute on an H100-class card.
RUN_FLAGS = ("--device", "cuda", "--gradient-accumulation-steps", "4", "--warmup-iters", "30",
             "--eval-interval", str(KILL_AT), "--eval-iters", "20", "--log-interval", "10")  # fmt: skip
MATMUL_SIZE = 8192
LOSS_LINE = re.compile(r"^iter (\d+) \| loss ([0-9.]+)")
# Tiny Shakespeare as documents of about this many characters (paragraphs
# joined), so the preset reads it the way it reads FineWeb-Edu's parquet.
DOCUMENT_CHARS = 2000


class CheckError(UserError):
    """A check could not run; the message is one line."""


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="gpu-check.json", help="where to write the figures (default: %(default)s)")
    parser.add_argument("--input", type=Path, default=DEFAULT_CORPUS,
                        help="Tiny Shakespeare's input.txt (default: %(default)s)")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="keep data, checkpoints and the Trackio database here (default: a temporary folder)")
    return parser


def check_arguments(args):
    """What a user can get wrong, found before the GPU is touched."""
    if not args.input.is_file():
        raise CheckError(f"--input {args.input}: no such file; point --input at Tiny Shakespeare's input.txt")
    out = Path(args.out)
    if out.is_dir():
        raise CheckError(f"--out {out} is a folder; give a file path such as gpu-check.json")
    if not out.resolve().parent.is_dir():
        raise CheckError(f"--out {out}: its folder does not exist")


def require_cuda():
    """The first CUDA call: without a GPU, the one line main() prints."""
    if not torch.cuda.is_available():
        raise CheckError(
            "no CUDA GPU here (torch.cuda.is_available() is False"
            + (f"; this torch {torch.__version__} has no CUDA build" if torch.version.cuda is None
               and torch.version.hip is None else "")
            + "); run make gpu-check on a machine with an NVIDIA (or ROCm) GPU"
        )


# ----------------------------------------------------------------------------
# What runs, as plain data (tests check it on the CPU)


def shakespeare_parquet(text_path, dest):
    """A parquet file with one `text` column: Tiny Shakespeare's paragraphs
    joined into documents of about DOCUMENT_CHARS characters."""
    import pyarrow
    import pyarrow.parquet

    documents, current = [], ""
    for paragraph in Path(text_path).read_text(encoding="utf-8").split("\n\n"):
        current += paragraph + "\n\n"
        if len(current) >= DOCUMENT_CHARS:
            documents.append(current)
            current = ""
    if current:
        documents.append(current)
    pyarrow.parquet.write_table(pyarrow.table({"text": documents}), dest)
    return dest


def configure_commands(config, build):
    """`make defconfig-gpt2-trackio` and make's genconfig, as commands."""
    return [
        [sys.executable, "-m", "scripts.configure", "--config", str(config), "--build-dir", str(build),
         "defconfig", PRESET, "--tracker", TRACKER],
        [sys.executable, "-m", "scripts.genconfig", "--config", str(config), "--build-dir", str(build)],
    ]  # fmt: skip


def train_flags(work, name, base, max_iters, extra=()):
    """The flags after the preset's argument set (make train's ARGS)."""
    return [*base, "--max-iters", str(max_iters), "--data-input", str(work / "shakespeare.parquet"),
            "--data-dir", str(work / "data"), "--out-dir", str(work / name), *extra]  # fmt: skip


def train_command(build, flags, nproc=1):
    """What `make train` runs (scripts/launch.py) for one process, or torchrun for `nproc`."""
    if nproc == 1:
        return [sys.executable, "-m", "scripts.launch", "--build-dir", str(build), "--", *flags]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
            "-m", "gpt2.train", f"@{build / 'train.args'}", *flags]  # fmt: skip


def environment(work):
    """Offline hubs and the Trackio database inside the work folder."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRACKIO_DIR=str(work / "trackio"))
    env.pop("WANDB_SERVICE", None)
    return env


def losses_of(output):
    """{iter: loss} of train.py's log lines."""
    return {int(m[1]): float(m[2]) for m in map(LOSS_LINE.match, output.splitlines()) if m}


def trackio_loss_points(trackio_dir):
    """How many train/loss points Trackio's databases under `trackio_dir` hold."""
    count = 0
    for db in Path(trackio_dir).rglob("*.db"):
        with sqlite3.connect(db) as conn:
            if conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='metrics'").fetchone():
                count += sum("train/loss" in json.loads(m) for (m,) in conn.execute("SELECT metrics FROM metrics"))
    return count


# ----------------------------------------------------------------------------
# The checks on the GPU


def gpu_facts():
    props = torch.cuda.get_device_properties(0)
    return {
        "name": torch.cuda.get_device_name(0),
        "count": torch.cuda.device_count(),
        "capability": f"{props.major}.{props.minor}",
        "memory_gib": props.total_memory / 2**30,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "hip": torch.version.hip,
    }


def matmul_check(name, seconds=2.0):
    """bf16 (8192 x 8192) products for about `seconds`, timed in batches of 10."""
    a = torch.randn(MATMUL_SIZE, MATMUL_SIZE, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(MATMUL_SIZE, MATMUL_SIZE, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(10):
            a @ b
        torch.cuda.synchronize()
        count += 10
    flops = 2 * MATMUL_SIZE**3 * count / (time.perf_counter() - start)
    peak = gpu_peak_flops(name, "bfloat16")
    return {"tflops": flops / 1e12, "peak_tflops": peak / 1e12 if peak else None,
            "fraction_of_peak": flops / peak if peak else None}  # fmt: skip


def bench_check(work, text_path):
    """`make bench --device cuda`'s training row, through its own machinery."""
    from gpt2.data.prepare import ensure_prepared
    from scripts.bench.bench import PLANS, scratch_environment
    from scripts.bench.rows import Workspace, run_step_worker, training_row

    scratch = work / "bench"
    scratch.mkdir(parents=True, exist_ok=True)
    ensure_prepared("shakespeare", scratch / "data", input_path=str(text_path), log=lambda _: None)
    data_flags = ("--dataset", "shakespeare", "--data-dir", str(scratch / "data"), "--data-input", str(text_path))
    workspace = Workspace(scratch=scratch, env=scratch_environment(scratch), data_flags=data_flags)
    row = PLANS["full"].train["cuda"][0]
    spec = {"flags": [*row.flags, "--tracker", "none", *data_flags], "warmup": row.warmup, "iters": row.iters}
    result = training_row(row.name, "train", run_step_worker(row.name, spec, workspace))
    return {key: result[key] for key in ("name", "ms_per_iter", "tokens_per_sec", "mfu", "peak_memory_mb", "note")}


def run(command, env, timeout, kill_after_line=None):
    """Run `command`, returning (exit status, its output).  With
    kill_after_line, SIGKILL it as soon as a line starts with that text."""
    proc = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)  # fmt: skip
    # A watchdog, not a check per line: a hung run prints nothing.
    watchdog = threading.Timer(timeout, proc.kill)
    watchdog.start()
    lines, on_cue = [], False
    try:
        for line in proc.stdout:
            lines.append(line)
            if kill_after_line and line.startswith(kill_after_line):
                proc.send_signal(signal.SIGKILL)
                on_cue = True
    finally:
        watchdog.cancel()
    status = proc.wait()
    if status == -signal.SIGKILL and not on_cue:
        lines.append(f"(killed after {timeout} s)\n")
    return status, "".join(lines)


def last_line(output):
    return (output.strip().splitlines() or ["no output"])[-1]


def training_checks(work, build, env, gpus, report, say, base=RUN_FLAGS, steps=STEPS, kill_at=KILL_AT):
    """preset, resume and ddp: the three training runs (and the interrupted
    one), with the flags `base` (whose --eval-interval must be kill_at)."""
    status, output = run(train_command(build, train_flags(work, "preset", base, steps)), env, timeout=240)
    reference = losses_of(output)
    first, last = (reference[min(reference)], reference[max(reference)]) if reference else (None, None)
    points = trackio_loss_points(work / "trackio")
    ok = status == 0 and bool(reference) and last < first and points >= len(reference)
    report["preset"] = {"exit": status, "losses": reference, "trackio_loss_points": points, "ok": ok}
    say(f"preset: {len(reference)} loss lines, {first} -> {last}, {points} points in Trackio"
        + ("" if report["preset"]["ok"] else f" FAILED: {last_line(output)}"))

    flags = train_flags(work, "resume", base, steps)
    killed, _ = run(train_command(build, flags), env, timeout=150, kill_after_line=f"eval {kill_at} |")
    status, output = run(train_command(build, [*flags, "--resume"]), env, timeout=200)
    resumed = losses_of(output)
    common = sorted(set(resumed) & set(reference))
    diff = max((abs(resumed[i] - reference[i]) for i in common), default=None)
    report["resume"] = {"killed_exit": killed, "exit": status, "steps_compared": common, "losses": resumed,
                        "max_abs_diff": diff, "identical": bool(common) and diff == 0,
                        "ok": killed == -signal.SIGKILL and status == 0 and bool(common) and diff < 0.01}  # fmt: skip
    say(f"resume: killed at step {kill_at} (exit {killed}), resumed to {max(resumed, default='-')}: "
        f"{len(common)} losses compared, largest difference {diff}"
        + ("" if report["resume"]["ok"] else f" FAILED: {last_line(output)}"))

    if gpus < 2:
        report["ddp"] = {"skipped": "one GPU"}
        say("ddp: skipped (one GPU)")
        return
    nproc = min(gpus, 8)
    flags = train_flags(work, "ddp", base, DDP_STEPS, extra=["--gradient-accumulation-steps", str(nproc)])
    status, output = run(train_command(build, flags, nproc=nproc), env, timeout=200)
    losses = losses_of(output)
    report["ddp"] = {"processes": nproc, "exit": status, "losses": losses, "ok": status == 0 and bool(losses)}
    say(f"ddp: {nproc} processes, {len(losses)} loss lines" + ("" if status == 0 else f" FAILED: {last_line(output)}"))


def checks(args, work, say):
    report = {"command": "make gpu-check", "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    start = time.perf_counter()
    report["gpu"] = gpu = gpu_facts()
    say(f"gpu: {gpu['count']} x {gpu['name']} (compute {gpu['capability']}, {gpu['memory_gib']:.0f} GiB) | "
        f"torch {gpu['torch']} | CUDA {gpu['cuda']}" + (f" | ROCm {gpu['hip']}" if gpu["hip"] else ""))
    report["matmul"] = mm = matmul_check(gpu["name"])
    say(f"matmul: bf16 {MATMUL_SIZE}^3 at {mm['tflops']:.0f} TFLOP/s"
        + (f" = {mm['fraction_of_peak']:.0%} of the {mm['peak_tflops']:.0f} peak" if mm["peak_tflops"]
           else " (no peak for this GPU in gpt2/run/mfu.py)"))
    torch.cuda.empty_cache()
    try:
        report["bench"] = bench = {**bench_check(work, args.input), "ok": True}
        mfu = f"{bench['mfu']:.1%}" if bench["mfu"] is not None else "unknown"
        say(f"bench: {bench['name']}: {bench['ms_per_iter']:.1f} ms/iter, {bench['tokens_per_sec']:,.0f} tokens/s, "
            f"MFU {mfu}")
    except (BenchError, DataError) as e:  # the other checks still run
        report["bench"] = {"ok": False, "error": str(e)}
        say(f"bench: FAILED: {e}")
    shakespeare_parquet(args.input, work / "shakespeare.parquet")
    build, env = work / "build", environment(work)
    for command in configure_commands(work / ".config", build):
        proc = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
        if proc.returncode:
            raise CheckError(f"{' '.join(command[2:4])} failed: {last_line(proc.stderr or proc.stdout)}")
    training_checks(work, build, env, gpu["count"], report, say)
    report["seconds"] = time.perf_counter() - start
    report["ok"] = all(report[k].get("ok", True) for k in ("bench", "preset", "resume", "ddp"))
    return report


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        check_arguments(args)
        require_cuda()
        with tempfile.TemporaryDirectory(prefix="gpt2lab-gpu-check-") as scratch:
            work = (args.work_dir or Path(scratch)).resolve()
            work.mkdir(parents=True, exist_ok=True)
            report = checks(args, work, lambda line: print(line, flush=True))
    except CheckError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    write_text_atomically(args.out, json.dumps(report, indent=2, default=str) + "\n")
    print(f"{'all checks passed' if report['ok'] else 'some checks FAILED'} in {report['seconds']:.0f} s; "
          f"figures in {args.out}", flush=True)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
