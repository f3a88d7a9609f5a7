"""Model FLOPs utilisation: achieved training FLOP/s over the device's peak.

nanoGPT divides by an A100's 312 TFLOP/s whatever the hardware; here the peak
comes from the GPU's name (dense tensor-core numbers from the vendors' data
sheets, no 2:4 sparsity), or, on CPU, from timing a large matrix multiply in
every library available (gpt2/cpu_matmul.py), the best of several rounds,
once per machine (gpt2/machine_profile.py keeps it): the fastest is the peak.
An MFU above 100% can only mean an underestimated peak: the loop then prints
above_peak_warning once.
An unknown GPU gets no MFU rather than a wrong one.
"""

import time

import torch

from gpt2 import cpu_matmul

# Dense peak FLOP/s by dtype.  float32 is the TF32 tensor-core rate, since
# gpt2/run_setup.py turns TF32 on.  Checked in order: the first pattern contained
# in torch.cuda.get_device_name() wins, so specific names come first
# ("H100 PCIe" before "H100", "GH200" before "H200", "L40S" before "L40"
# before "L4").
GPU_PEAK_FLOPS = (
    ("H100 PCIe", {"bfloat16": 756e12, "float16": 756e12, "float32": 378e12}),
    ("H100 NVL", {"bfloat16": 835e12, "float16": 835e12, "float32": 418e12}),
    ("H100", {"bfloat16": 989e12, "float16": 989e12, "float32": 495e12}),  # SXM
    ("GH200", {"bfloat16": 989e12, "float16": 989e12, "float32": 495e12}),
    ("H200", {"bfloat16": 989e12, "float16": 989e12, "float32": 495e12}),
    ("A100", {"bfloat16": 312e12, "float16": 312e12, "float32": 156e12}),
    ("L40S", {"bfloat16": 362e12, "float16": 362e12, "float32": 183e12}),
    ("L40", {"bfloat16": 181e12, "float16": 181e12, "float32": 90.5e12}),
    ("L4", {"bfloat16": 121e12, "float16": 121e12, "float32": 60e12}),
    ("A10", {"bfloat16": 125e12, "float16": 125e12, "float32": 62.5e12}),
    ("RTX 4090", {"bfloat16": 165e12, "float16": 165e12, "float32": 82.6e12}),
    ("RTX 3090", {"bfloat16": 71e12, "float16": 71e12, "float32": 35.6e12}),
    ("V100", {"float16": 125e12, "float32": 15.7e12}),  # no bfloat16, no TF32
    ("T4", {"float16": 65e12, "float32": 8.1e12}),
)

# Side of the square matrices timed on CPU: 2 * 1024^3 = 2.1 GFLOP per
# multiply, long enough to time, short enough for a laptop.
_CPU_MATMUL_SIZE = 1024


def gpu_peak_flops(device_name, dtype_name):
    """Peak FLOP/s of one GPU in `dtype_name`, or None if the card is not in
    GPU_PEAK_FLOPS.  Note: "A10" also matches the A10G, whose tensor peak is
    lower (~70 TFLOP/s); its MFU reads low, never high."""
    for pattern, peaks in GPU_PEAK_FLOPS:
        if pattern in device_name:
            return peaks.get(dtype_name)
    return None


def measure_matmul_flops(seconds=0.3, size=_CPU_MATMUL_SIZE, backend="blas"):
    """Best FLOP/s of a float32 (size x size) product on CPU over about
    `seconds`, all threads torch uses, through `backend` (gpt2/cpu_matmul.py)."""
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
    (gpt2/machine_profile.py keeps the result, so this runs once per machine.)"""
    backends = ("blas", "onednn") if cpu_matmul.available() else ("blas",)
    best = dict.fromkeys(backends, 0.0)
    for _ in range(rounds):
        for backend in backends:
            best[backend] = max(best[backend], measure(seconds, size, backend))
    return best


def peak_flops(device, dtype_name, cpu_flops):
    """Peak FLOP/s for MFU on `device` (a torch.device), or None if unknown.
    On CPU the float32 rate of the fastest library in `cpu_flops` (as
    cpu_matmul_flops returns), whichever the run uses: the peak of the
    machine, not of the code path.  Always float32: CPUs
    without native bfloat16/float16 multiply those far slower, which would
    make a low-precision MFU look better than float32 while the run is
    slower."""
    if device.type == "cuda":
        return gpu_peak_flops(torch.cuda.get_device_name(device), dtype_name)
    if device.type == "cpu":
        return max(cpu_flops.values())
    return None


def model_flops_utilization(flops_per_token, tokens_per_sec, peak, world_size=1):
    """MFU as a fraction: achieved FLOP/s of all ranks over their summed peak."""
    return flops_per_token * tokens_per_sec / (peak * world_size)


def above_peak_warning(mfu, peak, device):
    """The warning line for an MFU above 1.0, which only an underestimated
    peak can produce, with where that peak comes from and how to fix it."""
    if device.type == "cpu":
        from gpt2.machine_profile import cache_path  # the peak's cache

        fix = f"remove {cache_path()} to measure it again, on an idle machine"
    else:
        fix = "its entry in GPU_PEAK_FLOPS (gpt2/mfu.py) is too low"
    return (
        f"warning: MFU {mfu * 100:.0f}% is above 100%: the peak of {peak / 1e9:.3g} GFLOP/s it divides by "
        f"is underestimated; {fix}"
    )
