"""From the typed configs to where and how the run computes: device type,
autocast dtype and compilation, with the fallbacks this machine needs (no
CUDA, no native bfloat16, no C++ compiler for torch.compile on the CPU).

Checks of single parts live in their configs (gpt2/configs.py); these need
the machine.  Each raises UsageError with a message that names the flags
involved and how to fix them.
"""

import os
import shutil
import subprocess
import sys
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from gpt2.run.distributed import cuda_index
from gpt2.errors import UsageError

CPU_FALLBACK_NOTICE = (
    "notice: CUDA is not available; running on CPU in float32 without torch.compile "
    "(set DEVICE=cpu / --device cpu to silence)"
)
TOOL_CPU_FALLBACK = "notice: --device {device}: CUDA is not available here; {doing} on the CPU"
# bfloat16 in hardware: compute capability 8.0 (Ampere) and newer.
NATIVE_BF16 = (8, 0)
BF16_FALLBACK_NOTICE = (
    "notice: {gpu} (compute capability {capability}) has no native bfloat16 (needs 8.0, Ampere or newer); "
    "training in float16 with a gradient scaler (set DTYPE=float16 / --dtype float16 to silence)"
)

NO_COMPILER_NOTICE = (
    "notice: --compile on the CPU needs a C++ compiler (torch.compile's inductor backend builds C++ "
    "kernels) and none was found ({searched}); running uncompiled. Install g++ (or set CXX), "
    "or pass --no-compile to silence"
)


@dataclass(frozen=True)
class Precision:
    """Device type, autocast dtype and compilation actually used."""

    device_type: str
    dtype: str
    compile: bool

    @property
    def torch_dtype(self):
        return getattr(torch, self.dtype)

    def autocast(self):
        """Mixed-precision context for forward passes (none in float32)."""
        if self.dtype == "float32":
            return nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.torch_dtype)


def resolve_precision(system, log=print):
    """Where and how to run (`system`: a SystemConfig).  Asking for CUDA on a
    machine without it falls back to the only safe CPU setting (float32, no
    compile) with one notice; an explicit --device cpu keeps --dtype and
    --compile as given.  bfloat16 on a GPU without it in hardware (before
    Ampere) becomes float16 with a gradient scaler, with one notice."""
    device_type = torch.device(system.device).type
    dtype, compile_model = system.dtype, system.compile
    if device_type == "cuda" and not torch.cuda.is_available():
        log(CPU_FALLBACK_NOTICE)
        device_type, dtype, compile_model = "cpu", "float32", False
    if device_type == "mps" and not torch.backends.mps.is_available():
        raise UsageError("--device mps: this machine has no Apple GPU (MPS); use --device cpu")
    if device_type == "cpu" and compile_model and cpp_compiler() is None:
        log(NO_COMPILER_NOTICE.format(searched=", ".join(str(c) for c in compiler_candidates())))
        compile_model = False
    if device_type == "cuda":
        index = cuda_index(system.device)  # this process's GPU (a one-line error if there is none such)
        if dtype == "bfloat16" and torch.cuda.get_device_capability(index) < NATIVE_BF16:
            # Not torch.cuda.is_bf16_supported(): it also answers True for
            # emulated bfloat16 (slow, no flash attention), and on such a GPU
            # tries a bfloat16 tensor on the current device, GPU 0, whatever
            # this process's GPU.  Reading the capability creates no context.
            log(BF16_FALLBACK_NOTICE.format(gpu=torch.cuda.get_device_name(index),
                                            capability=".".join(map(str, torch.cuda.get_device_capability(index)))))
            dtype = "float16"
    return Precision(device_type=device_type, dtype=dtype, compile=compile_model)


def compiler_candidates():
    """The C++ compilers inductor tries on the CPU, in its order: its
    config.cpp.cxx (torch puts $CXX or g++ there), None entries left out."""
    try:
        from torch._inductor import config

        cxx = config.cpp.cxx
    except ImportError:  # a torch without inductor: its default
        cxx = (None, os.environ.get("CXX", "g++"))
    return [c for c in (cxx if isinstance(cxx, (list, tuple)) else (cxx,)) if c]


def cpp_compiler():
    """The C++ compiler torch.compile would build CPU kernels with, or None
    (its first CPU graph would then fail).  Asks inductor itself
    (cpp_builder.get_cpp_compiler, which runs `<cxx> --version` on each
    candidate); where that is not importable, does the same here."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler
    except ImportError:
        get_cpp_compiler = None
    if get_cpp_compiler is not None:
        try:
            return get_cpp_compiler()
        except Exception:  # inductor's InvalidCxxCompiler, or whatever its own check hits
            return None
    for cxx in compiler_candidates():
        try:
            subprocess.run([cxx, "--version"], capture_output=True, check=True, timeout=30)
            return shutil.which(cxx) or cxx
        except (OSError, subprocess.SubprocessError):
            continue
    return None


def pick_device(name, doing):
    """The torch device of a tool's --device (make sample, make eval; `doing`:
    "sampling"...): cuda without CUDA falls back to the CPU (as training
    does, gpt2/Kconfig DEVICE) with one notice; "auto" is cuda when there is
    one; anything else torch cannot read is one UsageError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device {name}: not a device; use cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        print(TOOL_CPU_FALLBACK.format(device=name, doing=doing), file=sys.stderr, flush=True)
        return torch.device("cpu")
    return device
