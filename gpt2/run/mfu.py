"""Model FLOPs utilisation: achieved training FLOP/s over the device's peak.

nanoGPT divides by an A100's 312 TFLOP/s whatever the hardware; here the peak
comes from the GPU's name (dense tensor-core numbers from the vendors' data
sheets, no 2:4 sparsity), or, on CPU, from timing a large matrix multiply
on every CPU path (gpt2/cpu/peak.py), the best of several rounds, once per
machine (gpt2/cpu/machine_profile.py keeps it): the fastest is the peak.
MFU is achieved over peak, so it never exceeds 100%: a run achieving more
than the peak shows the peak was underestimated, and Peak.utilization
raises it to what was achieved (saying so once; on CPU the raised peak is
kept for later runs, and the machine measured again at the next start).
An unknown GPU, and a MIG slice of a known one, get no MFU rather than a
wrong one.
"""

import re

import torch



def _peaks(bf16, tf32, fp16=None):
    """{dtype: dense FLOP/s}; float32 is the TF32 tensor-core rate, since
    gpt2/run/setup.py turns TF32 on.  fp16 defaults to the bf16 rate (the
    same on every card below that has both)."""
    peaks = {"float16": fp16 if fp16 is not None else bf16, "float32": tf32}
    if bf16 is not None:
        peaks["bfloat16"] = bf16
    return peaks


# Dense peak FLOP/s by dtype, from each vendor's data sheet: the sheets print
# the 2:4-sparse figure first (marked *), the dense one is half of it.
# Matching is by whole words of torch.cuda.get_device_name() (split at
# spaces, dashes and underscores, case ignored): "A10" matches "NVIDIA A10"
# but not "NVIDIA RTX A1000" or "NVIDIA A10G".  The first row whose words
# all occur, in order, in the name wins, so specific names come first
# ("H100 PCIe" before "H100", "H200 NVL" before "H200").  ROCm builds of
# torch report AMD GPUs through torch.cuda too ("AMD Instinct MI300X").
GPU_PEAK_FLOPS = (
    # NVIDIA H100 data sheet (nvidia.com/en-us/data-center/h100): PCIe 1,513*
    # bf16 / 756* TF32; NVL 1,671* / 835*; SXM 1,979* / 989*.
    ("H100 PCIe", _peaks(bf16=756e12, tf32=378e12)),
    ("H100 NVL", _peaks(bf16=835e12, tf32=418e12)),
    ("H100", _peaks(bf16=989e12, tf32=495e12)),  # SXM (the HBM3 80 GB card)
    # NVIDIA GH200 data sheet: the Hopper GPU of the superchip as H100 SXM.
    ("GH200", _peaks(bf16=989e12, tf32=495e12)),
    # NVIDIA H200 data sheet (nvidia.com/en-us/data-center/h200): NVL (PCIe,
    # 600 W) 1,671* bf16 / 835* TF32; SXM 1,979* / 989*.
    ("H200 NVL", _peaks(bf16=835e12, tf32=418e12)),
    ("H200", _peaks(bf16=989e12, tf32=495e12)),
    # NVIDIA HGX B200 (1,000 W) per-GPU specifications: 4.5 PF* bf16, 2.2 PF* TF32.
    ("B200", _peaks(bf16=2250e12, tf32=1100e12)),
    # NVIDIA A100 data sheet: 312 bf16/fp16, 156 TF32 (SXM and PCIe alike).
    ("A100", _peaks(bf16=312e12, tf32=156e12)),
    # NVIDIA A10 data sheet: 250* bf16, 125* TF32.  (The A10G of AWS is another
    # card with a lower clock: not matched, so no MFU.)
    ("A10", _peaks(bf16=125e12, tf32=62.5e12)),
    # NVIDIA L40S data sheet: 733* bf16, 366* TF32; L40: 362.1* / 181*.
    ("L40S", _peaks(bf16=362e12, tf32=183e12)),
    ("L40", _peaks(bf16=181e12, tf32=90.5e12)),
    # NVIDIA L4 data sheet: 242* bf16/fp16, 120* TF32.
    ("L4", _peaks(bf16=121e12, tf32=60e12)),
    # NVIDIA Ada Lovelace architecture whitepaper, RTX 4090: 165.2 fp16/bf16
    # with float32 accumulation (what torch uses), 82.6 TF32, dense.
    ("RTX 4090", _peaks(bf16=165e12, tf32=82.6e12)),
    # NVIDIA Ampere GA102 whitepaper, RTX 3090: 71 with float32 accumulation, 35.6 TF32.
    ("RTX 3090", _peaks(bf16=71e12, tf32=35.6e12)),
    # AMD Instinct MI300X data sheet: 1,307.4 bf16/fp16, 653.7 TF32 dense.
    # Whether torch on ROCm multiplies float32 as TF32 depends on its build
    # and hipBLASLt settings; the TF32 peak is the higher one, so a float32
    # MFU reads low, never high.
    ("MI300X", _peaks(bf16=1307e12, tf32=654e12)),
    # NVIDIA V100 / T4 data sheets: 125 / 65 fp16 tensor; no bfloat16, no TF32
    # (the float32 peak is the plain 15.7 / 8.1).
    ("V100", _peaks(bf16=None, fp16=125e12, tf32=15.7e12)),
    ("T4", _peaks(bf16=None, fp16=65e12, tf32=8.1e12)),
)

def _words(name):
    return re.split(r"[\s_-]+", name.strip().upper())


def _contains_words(words, pattern):
    """Whether the words of `pattern` occur in `words` one after another."""
    wanted = _words(pattern)
    return any(words[i : i + len(wanted)] == wanted for i in range(len(words) - len(wanted) + 1))


def gpu_peak_flops(device_name, dtype_name):
    """Peak FLOP/s of one GPU in `dtype_name`, or None when unknown: a card
    not in GPU_PEAK_FLOPS, a dtype the card has no tensor rate for, or a MIG
    slice ("NVIDIA A100-SXM4-40GB MIG 3g.20gb"), which has only part of the
    card's compute (the share of streaming multiprocessors differs per
    profile and card, so no peak is guessed)."""
    words = _words(device_name)
    if "MIG" in words:
        return None
    for pattern, peaks in GPU_PEAK_FLOPS:
        if _contains_words(words, pattern):
            return peaks.get(dtype_name)
    return None


def peak_flops(device, dtype_name, cpu_flops):
    """Peak FLOP/s for MFU on `device` (a torch.device), or None if unknown.
    On CPU the float32 rate of the fastest path in `cpu_flops` (as
    gpt2/cpu/peak.py cpu_matmul_flops returns), whichever the run uses: the peak of the
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


class Peak:
    """The FLOP/s (per rank) MFU divides by, never below what the run
    achieved, so an MFU is at most 1.0 wherever it is shown or logged.
    `where` says where the figure comes from; `on_raise(flops)` keeps a
    raised figure (the CPU's machine profile)."""

    def __init__(self, flops, where, log=print, on_raise=None):
        self.flops, self.where, self.log, self.on_raise = flops, where, log, on_raise
        self.raised = False

    def utilization(self, flops_per_token, tokens_per_sec, world_size=1):
        """MFU as a fraction of the peak of all `world_size` ranks; an
        achieved rate above the peak becomes the peak (said once per run)."""
        achieved = flops_per_token * tokens_per_sec / world_size
        if achieved > self.flops:
            if not self.raised:
                self.log(f"notice: this run achieves {achieved / 1e9:.3g} GFLOP/s, above the peak of "
                         f"{self.flops / 1e9:.3g} GFLOP/s {self.where}: that is the peak from now on")
                self.raised = True
            self.flops = achieved
            if self.on_raise:
                self.on_raise(achieved)
        return model_flops_utilization(flops_per_token, tokens_per_sec, self.flops, world_size)


def mfu_peak(device, dtype_name, cpu_flops, log=print):
    """The Peak of MFU on `device`, or None where it is unknown: on CPU the
    higher of the fastest path in `cpu_flops` and the highest rate this
    machine ever achieved (gpt2/cpu/machine_profile.py)."""
    flops = peak_flops(device, dtype_name, cpu_flops)
    if not flops:
        return None
    if device.type == "cpu":
        from gpt2.cpu import machine_profile

        flops = max(flops, machine_profile.kept_peak())
        return Peak(flops, machine_profile.where(), log, lambda f: machine_profile.raise_peak(f, log))
    where = f"of the data sheet for {torch.cuda.get_device_name(device)} (its GPU_PEAK_FLOPS entry, gpt2/run/mfu.py)"
    return Peak(flops, where, log)
