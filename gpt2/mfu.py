"""Model FLOPs utilisation: achieved training FLOP/s over the device's peak.

nanoGPT divides by an A100's 312 TFLOP/s whatever the hardware; here the peak
comes from the GPU's name (dense tensor-core numbers from the vendors' data
sheets, no 2:4 sparsity), or, on CPU, from timing a large matrix multiply.
An unknown GPU gets no MFU rather than a wrong one.
"""

import time

import torch

# Dense peak FLOP/s by dtype.  float32 is the TF32 tensor-core rate, since the
# training loop turns TF32 on.  Checked in order: the first pattern contained
# in torch.cuda.get_device_name() wins, so specific names come first
# ("H100 PCIe" before "H100", "L40S" before "L4").
GPU_PEAK_FLOPS = (
    ("H100 PCIe", {"bfloat16": 756e12, "float16": 756e12, "float32": 378e12}),
    ("H100 NVL", {"bfloat16": 835e12, "float16": 835e12, "float32": 418e12}),
    ("H100", {"bfloat16": 989e12, "float16": 989e12, "float32": 495e12}),  # SXM
    ("H200", {"bfloat16": 989e12, "float16": 989e12, "float32": 495e12}),
    ("GH200", {"bfloat16": 989e12, "float16": 989e12, "float32": 495e12}),
    ("A100", {"bfloat16": 312e12, "float16": 312e12, "float32": 156e12}),
    ("L40S", {"bfloat16": 362e12, "float16": 362e12, "float32": 183e12}),
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


def measure_matmul_flops(dtype=torch.float32, seconds=0.3, device="cpu", size=_CPU_MATMUL_SIZE):
    """Best FLOP/s of a square (size x size) matmul over about `seconds`: the
    practical peak of this machine (all threads torch uses)."""
    n = size
    # A private generator: measuring must not move the global RNG, which a
    # resumed run restores to continue exactly where it stopped.
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, generator=generator, device=device).to(dtype)
    b = torch.randn(n, n, generator=generator, device=device).to(dtype)
    torch.mm(a, b)  # warm-up: thread pool, kernel choice
    best = float("inf")
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def peak_flops(device, dtype_name):
    """Peak FLOP/s for MFU on `device` (a torch.device), or None if unknown.
    On CPU always the float32 rate: CPUs without native bfloat16/float16
    multiply those far slower, which would make a low-precision MFU look
    better than float32 while the run is slower."""
    if device.type == "cuda":
        return gpu_peak_flops(torch.cuda.get_device_name(device), dtype_name)
    if device.type == "cpu":
        return measure_matmul_flops(torch.float32)
    return None


def model_flops_utilization(flops_per_token, tokens_per_sec, peak, world_size=1):
    """MFU as a fraction: achieved FLOP/s of all ranks over their summed peak."""
    return flops_per_token * tokens_per_sec / (peak * world_size)
