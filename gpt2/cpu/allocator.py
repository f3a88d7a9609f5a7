"""Keep freed memory in the process for reuse: the biggest single speed-up of
CPU training here.

glibc's malloc serves every block larger than its mmap threshold (at most
32 MB by default) with a fresh mmap and returns it to the kernel on free.
A training step allocates and frees the same large tensors every time (the
51 MB embedding gradient, the chunk of logits, autograd's buffers), so each
step page-faults them all in again: the kernel zeroes every 4 KB page, and
the matrix multiply writing into the new memory waits for it.  Measured on
2 cores (docs/benchmarks.md), 4 layers x 256 wide, batch 8 x 128: 850 ->
590 ms per step for the full-logits loss, 700 -> 600 ms with the chunked one.

Raising the mmap threshold and the trim threshold makes malloc keep freed
blocks in its heap, and the next step reuses them without a fault; the
price is that the process keeps its peak memory until it exits, which a
training run does anyway.  The same effect is what PyTorch's CPU tuning
guide gets from jemalloc or tcmalloc via LD_PRELOAD; this needs no install.
"""

import ctypes
import ctypes.util
import sys

# mallopt() parameters, from glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# Blocks up to 1 GiB come from the heap; larger ones (rare) are still mmapped.
MMAP_THRESHOLD = 1 << 30
# Never hand the top of the heap back to the kernel (the largest int).
TRIM_THRESHOLD = 2**31 - 1

_applied = False


def keep_freed_memory():
    """Tell glibc's malloc to keep freed memory (once per process).  Returns
    whether the setting is in effect; False, harmlessly, where malloc is not
    glibc's (macOS, Windows, musl)."""
    global _applied
    if _applied or not sys.platform.startswith("linux"):
        return _applied
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    _applied = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _applied
