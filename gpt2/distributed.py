"""Data-parallel training under torchrun, and the no-op single-process case.

torchrun sets RANK / LOCAL_RANK / WORLD_SIZE; with more than one process each
rank trains on its own batches and DistributedDataParallel averages the
gradients.  Rank 0 alone logs, checkpoints, writes JSON and tracks.  Decisions
that end the loop (time budget, inf/NaN loss) are taken by all ranks together
through `any_rank`, and what rank 0 alone decides at start-up (prepared data or
its error, the CPU matmul library) reaches the others through `gather`, so no
rank is left waiting in a collective.
"""

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Distributed:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self):
        return self.world_size > 1

    @property
    def is_main(self):
        """The rank that logs, writes files and talks to the trackers."""
        return self.rank == 0

    def any_rank(self, flag, device):
        """True on every rank if `flag` is true on any rank (a collective:
        all ranks must call it at the same point of the loop)."""
        if not self.enabled:
            return bool(flag)
        value = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def barrier(self):
        """Wait until every rank gets here (a collective; no-op without DDP)."""
        if self.enabled:
            dist.barrier()

    def gather(self, obj):
        """List of every rank's `obj` (a collective), [obj] without DDP."""
        if not self.enabled:
            return [obj]
        gathered = [None] * self.world_size
        dist.all_gather_object(gathered, obj)
        return gathered


def launched_rank():
    """This process's rank from torchrun's environment (0 when run directly);
    usable before the process group exists, e.g. to print errors once."""
    return int(os.environ.get("RANK", "0"))


def start(device_type):
    """Join the process group if torchrun started several processes: NCCL
    between GPUs, gloo on CPU."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Distributed()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return Distributed(rank=rank, local_rank=local_rank, world_size=world_size)


def stop(distributed):
    if distributed.enabled and dist.is_initialized():
        dist.destroy_process_group()
