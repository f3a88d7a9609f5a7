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

under a key naming the CPU model, the instruction sets that decide the
peak (avx2, avx512f, avx512_bf16, amx: virtual machines all called "AMD
EPYC" differ there), the core count, the PyTorch version and the number of
threads torch uses (each changes the numbers), and every later run on the
machine reads the same numbers: one MFU denominator, one auto choice (taken
from the kept numbers with cpu_matmul.MIN_SPEEDUP's margin).

The peak only ever rises: a run that achieves more FLOP/s than the kept
peak contradicts it (it was measured on a busy machine), so raise_peak()
keeps what the run achieved as the peak (kept_peak()) and marks the entry,
and the next start measures again, keeping the higher figure of each
library.  Delete the file to start over.  A cache that cannot be read is
measured over; one that cannot be written costs a measurement per run and
one notice line.
"""

import json
import os
import platform
from datetime import datetime, timezone
from pathlib import Path

import torch

from lib.atomic import write_text_atomically

CACHE_FILE = "machine.json"
CPUINFO = "/proc/cpuinfo"
# The /proc/cpuinfo flags that decide a float32/bfloat16 matmul's peak;
# "amx" stands for any amx_* flag (amx_tile, amx_bf16, amx_int8).
PEAK_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx")


def cache_path():
    """Where the profiles of this user's machines are kept."""
    root = os.environ.get("XDG_CACHE_HOME") or Path("~/.cache").expanduser()
    return Path(root) / "gpt2lab" / CACHE_FILE


def _cpuinfo(field):
    """The first `field` line's value of /proc/cpuinfo (Linux), else None."""
    try:
        with open(CPUINFO, encoding="utf-8") as f:
            for line in f:
                if line.split(":", 1)[0].strip() == field:
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model():
    """The CPU's model name (/proc/cpuinfo on Linux), else what platform knows."""
    return _cpuinfo("model name") or platform.processor() or platform.machine() or "unknown CPU"


def peak_flags():
    """Those of PEAK_FLAGS this CPU has, "-" when none or unknown (not Linux)."""
    flags = set((_cpuinfo("flags") or "").split())
    have = [f for f in PEAK_FLAGS if f in flags or (f == "amx" and any(x.startswith("amx_") for x in flags))]
    return ",".join(have) or "-"


def machine_key():
    """What the CPU numbers depend on: CPU model, instruction sets, cores,
    PyTorch version, threads."""
    return (f"{cpu_model()} | {peak_flags()} | {os.cpu_count()} cores | torch {torch.__version__} | "
            f"{torch.get_num_threads()} threads")


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
    `measure()` (gpt2/run/mfu.py cpu_matmul_flops) once, then kept; measured
    again when a run contradicted them (raise_peak), keeping each library's
    higher figure."""
    path, key = cache_path(), machine_key()
    entry = _read(path).get(key)
    if _valid(entry) and not entry.get("contradicted"):
        return dict(entry["cpu_matmul_flops"])
    flops = measure()
    profiles = _read(path)  # again: another run may have added its machine meanwhile
    old = profiles.get(key) if _valid(profiles.get(key)) else {}
    if old:
        flops = {lib: max(value, old["cpu_matmul_flops"].get(lib, 0.0)) for lib, value in flops.items()}
    profiles[key] = {
        "cpu_matmul_flops": flops,
        "measured": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **({"observed_peak_flops": old["observed_peak_flops"]} if "observed_peak_flops" in old else {}),
    }
    _write(path, profiles, log)
    return flops


def _write(path, profiles, log):
    try:
        write_text_atomically(path, json.dumps(profiles, indent=2, sort_keys=True) + "\n")
    except OSError as exc:
        log(f"notice: cannot keep the CPU matmul peak in {path} ({exc.strerror}); it is measured at every start")


def kept_peak():
    """The highest FLOP/s ever seen on this machine: the kept matmul peak of
    its fastest library, or what a run achieved above it (0.0: none kept)."""
    entry = _read(cache_path()).get(machine_key())
    if not _valid(entry):
        return 0.0
    observed = entry.get("observed_peak_flops")
    observed = observed if isinstance(observed, (int, float)) else 0.0
    return max(max(entry["cpu_matmul_flops"].values()), observed)


def raise_peak(flops, log=print):
    """A run achieved `flops`, more than the kept peak: keep it as the peak,
    and have the next start measure the libraries again."""
    path = cache_path()
    profiles = _read(path)
    entry = profiles.get(machine_key())
    if not _valid(entry):
        return
    entry["observed_peak_flops"] = max(flops, entry.get("observed_peak_flops") or 0.0)
    entry["contradicted"] = True
    _write(path, profiles, log)


def where():
    """Where the CPU peak comes from, for the line saying it was raised."""
    return f"measured on this machine (kept in {cache_path()}; measured again at the next start)"
