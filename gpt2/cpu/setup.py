"""The CPU side of a run's set-up: which matrix-multiply library computes,
the fast paths attached to the model, and how the run names them.

gpt2/run/setup.py calls choose() once, attach() on the built model, and
keeps the CpuPath; nothing outside gpt2/cpu/ needs to know which libraries
exist.  Off the CPU (and when torch.compile decides) the path is empty.
"""

from dataclasses import dataclass

from gpt2.cpu import machine_profile
from gpt2.cpu import matmul as cpu_matmul
from gpt2.cpu.allocator import keep_freed_memory
from gpt2.cpu.fast_paths import use_cpu_fast_paths
from gpt2.cpu.peak import cpu_matmul_flops

NAMES = {"onednn": "oneDNN", "blas": "BLAS"}


def library_name(library):
    return NAMES.get(library, "BLAS")


@dataclass(frozen=True)
class CpuPath:
    """What a run computes with on the CPU.  `flops`: each library's
    measured speed (the MFU peak; {} off CPU and on ranks other than 0);
    `library`: the library the model's products go through ("blas" or
    "onednn"), None off CPU and when compiled (then torch decides)."""

    flops: dict
    library: str | None

    def note(self, prefix=", "):
        """`, oneDNN matmuls` for the run's start and end lines, or ""."""
        return f"{prefix}{library_name(self.library)} matmuls" if self.library else ""


def choose(system, precision, device, dist, recorded, log):
    """The CpuPath of the run: --cpu-matmul (gpt2/cpu/matmul.py), the same
    library on every rank; a compiled model leaves the choice to
    torch.compile.  "auto" takes the library `recorded` in the checkpoint
    being resumed (the two libraries' losses differ in the 4th decimal, so
    a resumed run continues on the same arithmetic), else decides from this
    machine's kept speeds (gpt2/cpu/machine_profile.py: measured once per
    machine, so the choice never flips between runs).  On the CPU, freed
    memory is kept for reuse (gpt2/cpu/allocator.py): no page faults for
    the same big tensors every step."""
    if device.type != "cpu":
        return CpuPath(flops={}, library=None)
    keep_freed_memory()

    def decide():
        flops = machine_profile.cpu_matmul_profile(cpu_matmul_flops, log)
        backend = "blas" if precision.compile else cpu_matmul.choose(system.cpu_matmul, flops)
        if recorded and not precision.compile and recorded != backend:
            if system.cpu_matmul == "auto" and (recorded == "blas" or cpu_matmul.available()):
                log(f"notice: --resume: {library_name(recorded)} matmuls, as the checkpoint's run "
                    f"(auto would take {library_name(backend)} here)")
                backend = recorded
            else:
                log(f"notice: --cpu-matmul {backend}: the checkpoint's run used {library_name(recorded)}; "
                    "losses will differ slightly from an uninterrupted run")
        return flops, backend

    # Timed on rank 0 alone (the others would only slow its timing down).
    flops, backend = dist.on_main(decide)
    return CpuPath(flops=flops if dist.is_main else {}, library=None if precision.compile else backend)


def attach(model, path, system):
    """The CPU fast paths on `model` (unwrapped): its products through the
    path's library, and the chunked loss: the speed of the full logits at
    half the peak memory (docs/benchmarks.md).  A compiled graph keeps plain
    modules (it fuses the softmax itself), and the GPU path keeps the plain
    loss it was planned with; --no-cpu-chunked-loss runs that plain loss on
    the CPU."""
    chunked = path.library is not None and system.cpu_chunked_loss
    use_cpu_fast_paths(model, path.library or "blas", chunked_loss=chunked)


def recorded_library(model, device):
    """The library `model` computes with, for the run's record ("blas" or
    "onednn"); None off CPU."""
    return cpu_matmul.library_of(model) if device.type == "cpu" else None
