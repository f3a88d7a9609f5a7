"""The training runs gpu-check starts, as plain data and one runner: the
commands, their flags, reading their output, and the resume verdict.  Stdlib
only at import (pyarrow when the parquet is made), so the tests check it all
on the CPU."""

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PRESET = "gpt2"
TRACKER = "trackio"
TRAIN_STEPS = 300
KILL_AT = 100  # the first checkpoint (EVAL_INTERVAL below)
DDP_STEPS = 50
# The preset's settings but these: 12 x 1,024 x 4 = 49,152 tokens a step
# (its TOTAL_BATCH_TOKENS off, so the accumulation steps count), so 300
# steps take about 40 s on an H100-class card (docs/benchmarks.md).
RUN_FLAGS = ("--device", "cuda", "--total-batch-tokens", "0", "--gradient-accumulation-steps", "4",
             "--warmup-iters", "30", "--eval-interval", str(KILL_AT), "--eval-iters", "20",
             "--log-interval", "10")  # fmt: skip
# A resume within this of the uninterrupted run passes; without
# --deterministic a GPU's backward kernels add in varying order.
RESUME_TOLERANCE = 0.01
LOSS_LINE = re.compile(r"^iter (\d+) \| loss ([0-9.]+)")
SPEED_LINE = re.compile(r"^iter \d+ \| loss [0-9.]+ \| .* \| ([\d,]+) tok/s(?: \| mfu ([0-9.]+)%)?")
COMPILE_LINE = re.compile(r"^iter 1: ([0-9.]+) s including torch\.compile", re.M)
RESUME_LINE = re.compile(r"^resuming from .* at iter (\d+)$", re.M)
# Tiny Shakespeare as documents of about this many characters (paragraphs
# joined), so the preset reads it the way it reads FineWeb-Edu's parquet.
DOCUMENT_CHARS = 2000


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
            "--data-dir", str(work / "data"), "--out-dir", str(work / name),
            "--json-output", str(work / f"{name}.json"), *extra]  # fmt: skip


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


@dataclass
class Finished:
    """How a run ended: its exit status, output, and whether it was killed
    on its cue line (not by the watchdog)."""

    status: int
    output: str
    on_cue: bool = False
    timed_out: bool = False


def run(command, env, timeout, kill_after_line=None):
    """Run `command` under a watchdog of `timeout` seconds.  With
    kill_after_line, SIGKILL it as soon as a line starts with that text.
    The child dies with us: an exception here (a step's time limit) kills it."""
    proc = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)  # fmt: skip
    fired = threading.Event()

    def watchdog():  # a timer, not a check per line: a hung run prints nothing
        fired.set()
        proc.kill()

    timer = threading.Timer(max(timeout, 0.1), watchdog)
    timer.start()
    lines, on_cue = [], False
    try:
        for line in proc.stdout:
            lines.append(line)
            if kill_after_line and not on_cue and line.startswith(kill_after_line):
                proc.send_signal(signal.SIGKILL)
                on_cue = True
    finally:
        timer.cancel()
        if proc.poll() is None and not on_cue:
            proc.kill()
    status = proc.wait()
    timed_out = fired.is_set() and not on_cue
    if timed_out:
        lines.append(f"(killed by the {timeout:.0f} s watchdog)\n")
    return Finished(status, "".join(lines), on_cue, timed_out)


def last_line(output):
    return (output.strip().splitlines() or ["no output"])[-1]


def losses_of(output):
    """{iter: loss} of train.py's log lines."""
    return {int(m[1]): float(m[2]) for m in map(LOSS_LINE.match, output.splitlines()) if m}


def speed_of(output, json_path=None):
    """The run's figures at its own recipe: the median tok/s and MFU of its
    log intervals after the first (compile and warm-up), the compile time,
    and peak memory (from --json-output)."""
    speeds = [m for m in map(SPEED_LINE.match, output.splitlines()) if m][1:]
    tokens = sorted(float(m[1].replace(",", "")) for m in speeds)
    mfus = sorted(float(m[2]) / 100 for m in speeds if m[2])
    compile_s = COMPILE_LINE.search(output)
    final = json.loads(Path(json_path).read_text()) if json_path and Path(json_path).is_file() else {}
    return {"tokens_per_sec": tokens[len(tokens) // 2] if tokens else None,
            "mfu": mfus[len(mfus) // 2] if mfus else None,
            "compile_s": float(compile_s[1]) if compile_s else None,
            "peak_memory_gb": final.get("peak_memory_gb")}  # fmt: skip


def trackio_loss_points(trackio_dir):
    """How many train/loss points Trackio's databases under `trackio_dir` hold."""
    count = 0
    for db in Path(trackio_dir).rglob("*.db"):
        with sqlite3.connect(db) as conn:
            if conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='metrics'").fetchone():
                count += sum("train/loss" in json.loads(m) for (m,) in conn.execute("SELECT metrics FROM metrics"))
    return count


def resume_verdict(killed, resumed, reference, kill_at, tolerance=RESUME_TOLERANCE):
    """Did the run killed on its step-`kill_at` checkpoint line resume there
    and repeat the uninterrupted run's losses (`reference`) after it?  Every
    reason it did not is in "failures"; ok only without any."""
    failures = []
    if not killed.on_cue:
        why = "the watchdog" if killed.timed_out else f"exit {killed.status}"
        failures.append(f"the first run was not killed on its step-{kill_at} checkpoint line ({why})")
    started = RESUME_LINE.search(resumed.output)
    resumed_at = int(started[1]) if started else None
    if resumed_at != kill_at:
        failures.append(f"the resumed run started at {'step 0 (no resume line)' if started is None else resumed_at}, "
                        f"not at {kill_at}")  # fmt: skip
    if resumed.status != 0:
        failures.append(f"the resumed run failed (exit {resumed.status}): {last_line(resumed.output)}")
    losses = losses_of(resumed.output)
    expected = sorted(step for step in reference if step > kill_at)
    compared = sorted(set(losses) & set(expected))
    if not expected or compared != expected:
        failures.append(f"{len(compared)} of the {len(expected)} losses after step {kill_at} to compare")
    diff = max((abs(losses[i] - reference[i]) for i in compared), default=None)
    if diff is not None and diff >= tolerance:
        failures.append(f"losses differ by up to {diff:.4g} (tolerance {tolerance})")
    return {"killed_on_cue": killed.on_cue, "killed_exit": killed.status, "resumed_at": resumed_at,
            "exit": resumed.status, "steps_compared": compared, "losses": losses, "max_abs_diff": diff,
            "identical": bool(compared) and diff == 0, "tolerance": tolerance, "failures": failures,
            "ok": not failures}  # fmt: skip
