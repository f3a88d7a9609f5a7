"""Data-parallel training under torchrun, and the no-op single-process case.

torchrun sets RANK / LOCAL_RANK / WORLD_SIZE; with more than one process each
rank trains on its own batches and DistributedDataParallel averages the
gradients.  Rank 0 alone logs, checkpoints, writes JSON and tracks.  Decisions
that end the loop (time budget, inf/NaN loss) are taken by all ranks together
through `any_rank`, and what rank 0 alone decides or checks at start-up
reaches the others through `on_main` (its value, or its error on every
rank), so no rank is left waiting in a collective.

Every collective gives up after --dist-timeout seconds (Kconfig DIST_TIMEOUT).
The one step that may take far longer, preparing the dataset (hours for
FineWeb-Edu at the presets' cap), is no collective: rank 0 prepares while the
other ranks poll torchrun's rendezvous store for its answer (`from_main`),
which has no deadline.
"""

import contextlib
import json
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from gpt2.errors import UsageError
from lib.errors import UserError


@dataclass
class Distributed:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    store: dist.Store | None = None  # torchrun's key-value store, for from_main (None without DDP)

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

    def all_reduce_sum(self, tensor):
        """Sum `tensor` over the ranks, in place (a collective); returns it."""
        if self.enabled:
            dist.all_reduce(tensor)
        return tensor

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

    def from_main(self, key, compute, poll_seconds=0.5):
        """compute() run on rank 0, its (JSON) value returned on every rank.
        The other ranks wait by polling the rendezvous store, not in a
        collective, so compute() may outlast --dist-timeout (a dataset
        prepared for hours).  Should rank 0 die, torchrun stops them."""
        if not self.enabled:
            return compute()
        if self.is_main:
            value = compute()
            self.store.set(key, json.dumps(value))
            return value
        while not self.store.check([key]):
            time.sleep(poll_seconds)
        return json.loads(self.store.get(key))

    def on_main(self, compute, *args):
        """compute(*args) on rank 0 alone; every rank returns its value, or
        raises the same UserError it raised (a collective: no rank is left
        waiting for one that stopped).  The value must pickle."""
        value, error = None, None
        if self.is_main:
            try:
                value = compute(*args)
            except UserError as exc:
                error = exc
        if self.enabled:
            value, error = self.gather((value, error))[0]
        if error is not None:
            raise error
        return value

    def check_all(self, problem):
        """Stop every rank with one error if any rank has a `problem` (a
        message, or None; a collective).  The error names the first such
        rank and its host, and is the same on every rank, so rank 0 prints it."""
        found = [(rank, host, p) for rank, (host, p) in enumerate(self.gather((socket.gethostname(), problem))) if p]
        if found:
            rank, host, message = found[0]
            where = f"rank {rank} on {host}: " if self.enabled else ""
            raise UsageError(where + message)


def launched_rank():
    """This process's rank from torchrun's environment (0 when run directly);
    usable before the process group exists, e.g. to print errors once."""
    return int(os.environ.get("RANK", "0"))


def cuda_index(device):
    """The GPU this process uses: its LOCAL_RANK under torchrun, else the
    index of --device cuda:N (0 for plain cuda).  Counting GPUs creates no
    CUDA context.  One-line UsageError when the machine has too few."""
    count = torch.cuda.device_count()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        per_node = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        if per_node > count:  # every rank says so, so rank 0 prints it
            raise UsageError(
                f"NPROC_PER_NODE: {per_node} processes on this node, but it has {count} GPU(s); "
                f"set NPROC_PER_NODE (torchrun --nproc-per-node) to {count} or fewer"
            )
        return int(os.environ["LOCAL_RANK"])
    index = torch.device(device).index
    if index is not None and index >= count:
        gpus = f"cuda:0 to cuda:{count - 1}" if count > 1 else "cuda:0"
        raise UsageError(f"--device {device}: this machine has {count} GPU(s) ({gpus}); use one of them")
    return index or 0


def start(device_type, timeout_seconds=None):
    """Join the process group if torchrun started several processes: NCCL
    between GPUs, gloo on CPU; every collective times out after
    `timeout_seconds` (train.py: --dist-timeout; None: torch's default)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Distributed()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    timeout = timedelta(seconds=timeout_seconds) if timeout_seconds else None
    # The store init_process_group would make itself (torchrun's, from
    # MASTER_ADDR/PORT), kept for from_main under keys of its own.
    store, rank, world_size = next(
        dist.rendezvous("env://", rank, world_size, **({"timeout": timeout} if timeout else {}))
    )
    dist.init_process_group(
        backend="nccl" if device_type == "cuda" else "gloo",
        store=dist.PrefixStore("default_pg", store),
        rank=rank,
        world_size=world_size,
        timeout=timeout,
    )
    # torchrun keeps its store over restarts of the workers: a key per attempt.
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return Distributed(rank=rank, local_rank=local_rank, world_size=world_size,
                       store=dist.PrefixStore(f"gpt2lab/{attempt}", store))


# How often each rank looks for another's failure, how long it then gives
# its own error (the same one, raised on every rank) to arrive first, and
# how long a failed rank waits for the others to have seen it (without
# torchrun, rank 0 hosts the store: it must outlive their look).
FAILURE_POLL_S = 1.0
FAILURE_GRACE_S = 3.0
FAILURE_ACK_S = 10.0


@contextlib.contextmanager
def stop_all_on_failure(distributed, expected=(), poll_seconds=FAILURE_POLL_S, grace_seconds=FAILURE_GRACE_S):
    """The block of a run's life on every rank; the process group is torn
    down at its end.  Under DDP, a rank whose block fails (an exception
    other than `expected`, e.g. a full disk in rank 0's checkpoint) posts
    it to the rendezvous store; every other rank watches the store from a
    thread and, unless it is failing itself, prints one line and exits
    with status 1 within seconds, instead of waiting in its next
    collective until --dist-timeout."""
    if not distributed.enabled:
        try:
            yield
        finally:
            stop(distributed)
        return
    store, rank = distributed.store, distributed.rank
    finished = threading.Event()
    seen = {}  # the failure of another rank, once the watcher has read it

    def watch():
        while not finished.wait(poll_seconds):
            failed = _read_failure(store)
            if failed is None:
                continue
            seen.update(failed)
            try:
                store.set(f"failed-seen/{rank}", "1")  # the failed rank waits for this before it exits
            except Exception:
                pass
            if failed["rank"] == rank or finished.wait(grace_seconds):
                return  # this rank is stopping already (the same error on every rank, or the peer's in a collective)
            print(_stops_too(failed, rank), file=sys.stderr, flush=True)
            os._exit(1)

    watcher = threading.Thread(target=watch, name="gpt2lab-failure-watch", daemon=True)
    watcher.start()
    try:
        yield
    except BaseException as exc:
        finished.set()
        if isinstance(exc, expected):
            raise
        # An error of this rank's own (the same one on every rank, from a
        # check every rank makes) is this rank's to print; anything else,
        # after another rank failed, is most likely the collective that broke.
        failed = None if isinstance(exc, UserError) else seen or _read_failure(
            store, wait_seconds=grace_seconds if isinstance(exc, RuntimeError) else 0)
        if failed and failed["rank"] != rank:
            # A collective broke because another rank failed first: say that, not its traceback.
            print(_stops_too(failed, rank), file=sys.stderr, flush=True)
            raise SystemExit(1) from None
        _post_failure(distributed, exc)
        raise
    finally:
        finished.set()
        stop(distributed)


def _stops_too(failed, rank):
    return f"error: rank {failed['rank']} failed ({failed['error']}); rank {rank} stops too"


def _read_failure(store, wait_seconds=0.0):
    """The failure another rank posted ({"rank", "error"}), or None; waits
    up to `wait_seconds` for one to appear.  A store that cannot be reached
    means its host (rank 0, without torchrun) has exited."""
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            if store.check(["failed"]):
                return json.loads(store.get("failed"))
        except Exception:
            return {"rank": 0, "error": "its process exited"}
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.1)


def _post_failure(distributed, exc):
    """Tell the other ranks this one failed, and wait (a little) until each
    has seen it or failed too."""
    store, rank = distributed.store, distributed.rank
    try:
        store.set(f"failed-seen/{rank}", "1")
        store.set("failed", json.dumps({"rank": rank, "error": " ".join(str(exc).split())[:300] or type(exc).__name__}))
        others = [f"failed-seen/{r}" for r in range(distributed.world_size) if r != rank]
        deadline = time.monotonic() + FAILURE_ACK_S
        while not store.check(others) and time.monotonic() < deadline:
            time.sleep(0.1)
    except Exception:  # the store is gone already: nobody left to tell
        pass


def stop(distributed):
    if distributed.enabled and dist.is_initialized():
        dist.destroy_process_group()
