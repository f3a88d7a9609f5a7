"""What start-up measurements find about this machine, measured once and kept.

A CPU run needs two numbers it can only measure: the float32 matmul peak
that MFU divides by, and which library `--cpu-matmul auto` takes (BLAS or
oneDNN, gpt2/cpu/matmul.py).  Measured at every start, both move with
whatever else runs on the machine: a busy start-up read the peak low (MFU
above 100%) and flipped auto's choice between runs, so a resumed run could
continue on the other arithmetic (losses differing in the 4th decimal).
So they are measured once per machine (best of several rounds, gpt2/run/mfu.py
cpu_matmul_flops), kept in

    $XDG_CACHE_HOME/gpt2lab/machine.json   (default ~/.cache/gpt2lab/machine.json)

under a key naming the CPU model, the PyTorch version and the number of
threads torch uses (each changes the numbers), and every later run on the
machine reads the same numbers: one MFU denominator, one auto choice (taken
from the kept numbers with cpu_matmul.MIN_SPEEDUP's margin).  Delete the
file to measure again.  A cache that cannot be read is measured over; one
that cannot be written costs a measurement per run and one notice line.
"""

import json
import os
import platform
from datetime import datetime, timezone
from pathlib import Path

import torch

from lib.atomic import write_text_atomically

CACHE_FILE = "machine.json"


def cache_path():
    """Where the profiles of this user's machines are kept."""
    root = os.environ.get("XDG_CACHE_HOME") or Path("~/.cache").expanduser()
    return Path(root) / "gpt2lab" / CACHE_FILE


def cpu_model():
    """The CPU's model name (/proc/cpuinfo on Linux), else what platform knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_key():
    """What the CPU numbers depend on: CPU model, PyTorch version, threads."""
    return f"{cpu_model()} | torch {torch.__version__} | {torch.get_num_threads()} threads"


def _read(path):
    try:
        profiles = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return profiles if isinstance(profiles, dict) else {}


def _valid(entry):
    flops = entry.get("cpu_matmul_flops") if isinstance(entry, dict) else None
    return (
        isinstance(flops, dict)
        and "blas" in flops
        and all(isinstance(v, (int, float)) and v > 0 for v in flops.values())
    )


def cpu_matmul_profile(measure, log=print):
    """{library: FLOP/s} of this machine's float32 matmuls: kept ones, or
    `measure()` (gpt2/run/mfu.py cpu_matmul_flops) once, then kept."""
    path, key = cache_path(), machine_key()
    entry = _read(path).get(key)
    if _valid(entry):
        return dict(entry["cpu_matmul_flops"])
    flops = measure()
    profiles = _read(path)  # again: another run may have added its machine meanwhile
    profiles[key] = {
        "cpu_matmul_flops": flops,
        "measured": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    try:
        write_text_atomically(path, json.dumps(profiles, indent=2, sort_keys=True) + "\n")
    except OSError as exc:
        log(f"notice: cannot keep the CPU matmul peak in {path} ({exc.strerror}); it is measured at every start")
    return flops
