"""The in-process measurements of `make bench`: what machine this is, its
float32 matrix-multiply peak, and how fast GPT-2 tokenization runs on one
process and on all of them."""

import os
import platform
import time
from datetime import datetime

import torch

from gpt2.cpu.machine_profile import cpu_model
from gpt2.cpu.peak import cpu_matmul_flops
from gpt2.data.tokenizer import close_workers, default_workers, gpt2_encoding, tokenize

# Square sizes timed for the CPU peak: the best of them is the peak (on the
# 2-core EPYC of docs/benchmarks.md, 256 to 2048 all land within 5%).
PEAK_SIZES = (1024, 2048)


def machine(device):
    """What the numbers were measured on, for the header line and the JSON."""
    info = {
        "cpu": cpu_model(),
        "cores": default_workers(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "blas": "MKL" if torch.backends.mkl.is_available() else "other",
        "python": platform.python_version(),
        "device": device,
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    return info


def matmul_peak(seconds):
    """{library: best float32 FLOP/s over PEAK_SIZES}, `seconds` for each
    size, for torch.mm's BLAS and, where available, oneDNN
    (gpt2/cpu/matmul.py): the machine's peak is the fastest of them."""
    per_size = [cpu_matmul_flops(seconds, size, rounds=1) for size in PEAK_SIZES]  # bench repeats it itself
    return {library: max(flops[library] for flops in per_size) for library in per_size[0]}


def corpus_text(path, megabytes):
    """The corpus repeated in memory to about `megabytes` MB: one pass over
    Tiny Shakespeare (1.1 MB) is too short to time steadily."""
    text = path.read_text(encoding="utf-8")
    copies = max(1, round(megabytes * 1e6 / len(text.encode("utf-8"))))
    return text * copies


def time_tokenize(text, workers, fresh_workers):
    """(seconds, tokens) of one tokenize(text, num_workers=workers).

    fresh_workers: start the worker processes inside the timing, as a data
    preparation does once; else reuse the ones already running, as every
    later 16 MB piece of a long preparation does (prepare_data.py).  Fresh
    ones cost 10-25% of a 10 MB run here: not the fork itself (~5 ms) but
    the copy-on-write page faults both processes take in the first
    hundreds of milliseconds after it.  The encoding itself is built
    beforehand (once per process, ~0.5 s; not tokenization)."""
    gpt2_encoding()
    if fresh_workers:
        close_workers()
    start = time.perf_counter()
    tokens = len(tokenize(text, num_workers=workers))
    return time.perf_counter() - start, tokens
