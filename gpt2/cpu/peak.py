"""The CPU's peak float32 FLOP/s, MFU's denominator on the CPU: a large
matrix multiply timed through every library this PyTorch can use
(gpt2/cpu/matmul.py), the best of several rounds.  gpt2/cpu/machine_profile.py
keeps the result, so this runs once per machine; gpt2/run/mfu.py divides by it.
"""

import time

import torch

from gpt2.cpu import matmul as cpu_matmul

# Side of the square matrices timed on CPU: 2 * 1024^3 = 2.1 GFLOP per
# multiply, long enough to time, short enough for a laptop.
_CPU_MATMUL_SIZE = 1024



def measure_matmul_flops(seconds=0.3, size=_CPU_MATMUL_SIZE, backend="blas"):
    """Best FLOP/s of a float32 (size x size) product on CPU over about
    `seconds`, all threads torch uses, through `backend` (gpt2/cpu/matmul.py)."""
    # A private generator: measuring must not move the global RNG, which a
    # resumed run restores to continue exactly where it stopped.
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator)
    b = torch.randn(size, size, generator=generator)
    multiply = cpu_matmul.product(backend)
    multiply(a, b)  # warm-up: thread pool, kernel choice
    best = float("inf")
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        multiply(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def cpu_matmul_flops(seconds=0.1, size=_CPU_MATMUL_SIZE, rounds=5, measure=measure_matmul_flops):
    """{backend: FLOP/s} of every float32 matrix-multiply library this
    PyTorch can use on CPU: torch.mm's BLAS, and oneDNN where available.
    Each is the best of `rounds` measurements of `seconds`, the libraries
    taking turns (as `make bench` repeats its timings), so a burst of work
    from another process lowers some rounds, not the result: a peak taken
    from one short window on a busy machine read low, and MFU over 100%.
    (gpt2/cpu/machine_profile.py keeps the result, so this runs once per machine.)"""
    backends = ("blas", "onednn") if cpu_matmul.available() else ("blas",)
    best = dict.fromkeys(backends, 0.0)
    for _ in range(rounds):
        for backend in backends:
            best[backend] = max(best[backend], measure(seconds, size, backend))
    return best
