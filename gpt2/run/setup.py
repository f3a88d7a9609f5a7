"""Building a training run from its typed configs (gpt2/configs.py): device,
data, model, optimizer, pruner, and with --resume the saved state.
gpt2/train.py runs what this builds.

Order matters for an exact resume: every random generator is restored last
(resume_rng, called right before the first step), after everything that
might draw random numbers while being built.
"""

import math
import os
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from gpt2.cpu import matmul as cpu_matmul
from gpt2.cpu import machine_profile
from gpt2.data.batches import Batches
from gpt2.run.checkpoint import LATEST, load_checkpoint, set_rng_state
from gpt2.cpu.allocator import keep_freed_memory
from gpt2.cpu.fast_paths import use_cpu_fast_paths
from gpt2.run.distributed import cuda_index
from gpt2.errors import UsageError
from gpt2.run.health import run_health
from gpt2.run.mfu import Peak, cpu_matmul_flops, mfu_peak
from gpt2.model.gpt import GPT
from gpt2.data.prepare import DataError, data_fingerprint, ensure_prepared
from gpt2.run.precision import check_resume_compatible
from gpt2.run.samples import training_sampler
from lib.atomic import write_text_atomically
from lib.optim import build_optimizer
from lib.pruning import build_pruner
from lib.trackers import TrackerError, journal_state, null_trackers, open_trackers
from lib.trackers.run_info import provenance


@dataclass
class Run:
    """Everything the loop works with, built once by setup()."""

    cfg: object  # the RunConfig: every part's settings
    flags: dict  # the resolved flags, plain values (checkpoints, trackers)
    precision: object
    dist: object
    device: torch.device
    raw_model: GPT  # unwrapped: what checkpoints hold
    model: torch.nn.Module  # compiled and/or DDP-wrapped: what trains
    eval_model: torch.nn.Module  # compiled, never DDP: each rank evaluates its share of the batches
    optimizer: torch.optim.Optimizer
    pruner: object
    scaler: torch.amp.GradScaler
    batches: Batches
    micro_steps: int  # gradient-accumulation steps on this rank
    tokens_per_iter: int  # over all ranks
    peak: Peak | None  # MFU's denominator (rank 0)
    log: object
    tracker_resume_state: dict | None = None  # --resume before any checkpoint: the journal's runs
    stop: object = None  # gpt2/run/preemption.py StopSignals, while the loop runs
    stopped_by: int | None = None  # the signal the loop stopped on
    iter_num: int = 0
    best_val_loss: float = math.inf
    training_time: float = 0.0  # seconds, summed over resumed sessions
    trackers: object = None
    health: object = None  # gpt2/run/health.py RunHealth
    sampler: object = None  # gpt2/run/samples.py TrainingSampler, or None


def prepared_data_dir(data, dist, log):
    """Rank 0 prepares (or finds) the dataset while the other ranks wait for
    its folder, or its error, without a collective (preparing can take hours:
    distributed.from_main); then every rank checks that it sees the same
    finished data there, which on several nodes takes a --data-dir they all
    share (or the same data prepared on each node beforehand)."""

    def prepare():
        try:
            folder = ensure_prepared(
                data.dataset,
                data.data_dir,
                input_path=data.data_input or None,
                max_tokens=data.data_max_tokens,
                log=log,
            )
        except DataError as e:
            return {"error": str(e)}
        return {"error": None, "fingerprint": data_fingerprint(folder)}

    answer = dist.from_main("prepared-data", prepare)
    if answer["error"]:
        raise UsageError(answer["error"])
    folder = answer["fingerprint"]["folder"]
    missing = not dist.is_main and data_fingerprint(folder) != answer["fingerprint"]
    dist.check_all(
        f"--data-dir: {folder}, prepared by rank 0, is missing or different here; put --data-dir on a "
        "filesystem every node shares, or prepare the same data on each node first (gpt2/prepare_data.py)"
        if missing else None
    )
    return Path(folder)


SHARED_MARKER = ".rank0-marker"


def check_shared_out_dir(out_dir, dist):
    """Only rank 0 writes checkpoints, and every rank reads them on --resume:
    with several processes, check that --out-dir is one folder they all see
    (a marker file rank 0 writes, every rank reads, rank 0 then removes)."""
    if not dist.enabled:
        return
    marker = Path(out_dir) / SHARED_MARKER
    token = uuid.uuid4().hex if dist.is_main else None
    if dist.is_main:
        marker.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomically(marker, token)
    try:
        token = dist.gather(token)[0]
        try:
            seen = marker.read_text()
        except OSError:
            seen = None
        dist.check_all(
            None if seen == token else
            f"--out-dir {out_dir} is not the folder rank 0 writes to; put --out-dir on a filesystem every "
            "node shares (rank 0 alone writes checkpoints, every rank reads them on --resume)"
        )
    finally:
        if dist.is_main:
            marker.unlink(missing_ok=True)


def select_device(system, precision):
    """The torch.device to train on, made this process's current device:
    a GPU's RNG state (saved in checkpoints), pinned memory and cuBLAS then
    belong to cuda:N, not GPU 0.  Under torchrun each process takes the GPU
    of its LOCAL_RANK."""
    if precision.device_type != "cuda":
        return torch.device(precision.device_type)
    device = torch.device("cuda", cuda_index(system.device))
    torch.cuda.set_device(device)
    torch.backends.cuda.matmul.allow_tf32 = True  # float32 matmuls on tensor cores
    torch.backends.cudnn.allow_tf32 = True
    return device


def use_deterministic(system):
    """--deterministic: deterministic kernels only (torch warns once about an
    operation that has none), and the cuBLAS workspace setting they need,
    set before cuBLAS starts.  Bit-identical GPU runs and resumes, at a cost
    (README, "Checkpoints and resume")."""
    if system.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def cpu_matmul_setup(system, precision, device, dist, recorded, log):
    """Pick the CPU matrix-multiply library (--cpu-matmul, gpt2/cpu/matmul.py),
    the same one on every rank; a compiled model leaves the choice to
    torch.compile.  "auto" takes the library `recorded` in the checkpoint
    being resumed (the two libraries' losses differ in the 4th decimal, so a
    resumed run continues on the same arithmetic), else decides from this
    machine's kept speeds (gpt2/cpu/machine_profile.py: measured once per
    machine, so the choice never flips between runs).  Returns the speeds
    per library (the MFU peak; {} off CPU and on the other ranks) and the
    library for use_cpu_fast_paths ("blas" off CPU and when compiled)."""
    if device.type != "cpu":
        return {}, "blas"
    flops, backend, error = {}, None, None
    if dist.is_main:  # the others would only slow its timing down
        flops = machine_profile.cpu_matmul_profile(cpu_matmul_flops, log)
        try:
            backend = "blas" if precision.compile else cpu_matmul.choose(system.cpu_matmul, flops)
        except UsageError as e:
            error = str(e)
        if backend and recorded and not precision.compile and recorded != backend:
            if system.cpu_matmul == "auto" and (recorded == "blas" or cpu_matmul.available()):
                log(f"notice: --resume: {matmul_name(recorded)} matmuls, as the checkpoint's run "
                    f"(auto would take {matmul_name(backend)} here)")
                backend = recorded
            else:
                log(f"notice: --cpu-matmul {backend}: the checkpoint's run used {matmul_name(recorded)}; "
                    "losses will differ slightly from an uninterrupted run")
    backend, error = dist.gather((backend, error))[0]
    if error:
        raise UsageError(error)
    return flops, backend


def matmul_name(library):
    return "oneDNN" if library == "onednn" else "BLAS"


def matmul_path(run):
    """The CPU matmul library the run computes with, for its checkpoint and
    its record: "blas" or "onednn"; None off CPU and when compiled (then
    torch decides)."""
    if run.device.type != "cpu" or run.precision.compile:
        return None
    return cpu_matmul.library_of(run.raw_model)


def check_output_paths(training):
    """Create --json-output's folder, and check that a file can be written
    there, before step 0 rather than when the metrics are written at the
    end.  (--out-dir is checked by its lock, gpt2/run/out_dir_lock.py.)"""
    if not training.json_output:
        return
    folder = Path(training.json_output).parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-")
        probe.close()
    except OSError as exc:
        reason = "a file, not a folder" if isinstance(exc, FileExistsError) else exc.strerror
        raise UsageError(
            f"--json-output {training.json_output}: cannot write into {folder} ({reason}); "
            "give a file in a writable folder"
        ) from None


def on_rank_0(dist, check, *args):
    """check(*args) on rank 0 only; every rank raises its UsageError (a
    collective: no rank is left waiting for one that stopped)."""
    error = None
    if dist.is_main:
        try:
            check(*args)
        except UsageError as exc:
            error = str(exc)
    error = dist.gather(error)[0]
    if error:
        raise UsageError(error)


def micro_steps_per_rank(training, dist):
    """GRADIENT_ACCUMULATION_STEPS is the total over all ranks (as nanoGPT):
    the global batch stays the same whatever the number of processes."""
    steps, ranks = training.gradient_accumulation_steps, dist.world_size
    if steps % ranks:
        raise UsageError(
            f"--gradient-accumulation-steps {steps} is not a multiple of the {ranks} processes; "
            f"it is the total over all processes, so use a multiple of {ranks}"
        )
    return steps // ranks


def build_training(cfg, device):
    """Model, optimizer and pruner, with ValueErrors from lib/ turned into
    one-line usage errors."""
    model = GPT(cfg.model.gpt_config()).to(device)
    try:
        optimizer = build_optimizer(model, cfg.optimizer, cfg.optimizer_own)
        pruner = build_pruner(model, optimizer, cfg.pruning)
    except ValueError as e:
        raise UsageError(str(e)) from None
    return model, optimizer, pruner


def plain_flags(args):
    """The flags as plain values, for checkpoints and trackers."""
    return {k: v if isinstance(v, (str, int, float, bool, type(None))) else str(v) for k, v in vars(args).items()}


def setup(cfg, flags, precision, dist, log):
    """Build the run from `cfg` (the RunConfig; `flags`: the resolved flags,
    recorded in checkpoints); with --resume, restore everything but the RNG
    states (restored by resume_rng just before the first step)."""
    training = cfg.training
    use_deterministic(cfg.system)
    device = select_device(cfg.system, precision)
    if device.type == "cpu":
        keep_freed_memory()  # no page faults for the same big tensors every step
    on_rank_0(dist, check_output_paths, training)
    check_shared_out_dir(training.out_dir, dist)  # before any rank looks for a checkpoint there
    checkpoint, tracker_state = resume_point(training, log)
    recorded_matmul = checkpoint.get("cpu_matmul") if checkpoint else None
    cpu_flops, matmul_library = cpu_matmul_setup(cfg.system, precision, device, dist, recorded_matmul, log)
    torch.manual_seed(training.seed + dist.rank)  # own dropout per rank; DDP copies rank 0's init to all
    config = cfg.model.gpt_config()
    micro_steps = micro_steps_per_rank(training, dist)
    if checkpoint:
        check_resume_compatible(cfg, checkpoint)
    data_dir = prepared_data_dir(cfg.data, dist, log)
    batches = Batches(
        data_dir,
        block_size=config.block_size,
        batch_size=training.batch_size,
        device=device,
        train_seed=training.seed + 1 + dist.rank,  # each rank its own batches
        eval_seed=training.seed,  # every eval, on every rank, the same batches
    )
    raw_model, optimizer, pruner = build_training(cfg, device)
    # On CPU the chunked loss: the speed of the full logits at half the peak
    # memory (docs/benchmarks.md).  A compiled graph keeps plain modules (it
    # fuses the softmax itself), and the GPU path keeps the plain loss it
    # was planned with; --no-cpu-chunked-loss runs that plain loss on CPU.
    chunked_loss = device.type == "cpu" and not precision.compile and cfg.system.cpu_chunked_loss
    use_cpu_fast_paths(raw_model, matmul_library, chunked_loss=chunked_loss)
    scaler = torch.amp.GradScaler(device.type, enabled=precision.dtype == "float16")
    model = eval_model = torch.compile(raw_model) if precision.compile else raw_model
    if dist.enabled:
        model = DistributedDataParallel(model, device_ids=[dist.local_rank] if device.type == "cuda" else None)
    run = Run(
        cfg=cfg,
        flags=flags,
        precision=precision,
        dist=dist,
        device=device,
        raw_model=raw_model,
        model=model,
        eval_model=eval_model,
        optimizer=optimizer,
        pruner=pruner,
        scaler=scaler,
        batches=batches,
        micro_steps=micro_steps,
        tokens_per_iter=training.batch_size * config.block_size * training.gradient_accumulation_steps,
        peak=mfu_peak(device, precision.dtype, cpu_flops, log) if dist.is_main else None,
        log=log,
        tracker_resume_state=tracker_state,
    )
    library = matmul_path(run)
    matmul_note = f", {matmul_name(library)} matmuls" if library else ""
    log(
        f"model {cfg.model.model}: {config.n_layer} layers, {config.n_head} heads, {config.n_embd} wide, "
        f"block {config.block_size}, {raw_model.num_parameters() / 1e6:.2f}M parameters | "
        f"{device} {precision.dtype}{' compiled' if precision.compile else ''}{matmul_note} | "
        f"{run.tokens_per_iter:,} tokens/iter = {training.batch_size} batch x {config.block_size} block x "
        f"{training.gradient_accumulation_steps} accumulation"
        + (f" ({micro_steps} per process x {dist.world_size} processes)" if dist.enabled else "")
    )
    run.health, run.sampler = run_health(run), training_sampler(run)
    if checkpoint:
        restore(run, checkpoint)
    return run, checkpoint


def resume_point(training, log):
    """(checkpoint, tracker state) that --resume continues from: the
    checkpoint in --out-dir; or, for a run stopped before its first
    checkpoint (the journal shows it started), no checkpoint, so training
    starts again from step 0, but the same tracker runs, so a tracker holds
    each step once.  (None, None) without --resume."""
    if not training.resume:
        return None, None
    if not (Path(training.out_dir) / LATEST).is_file():
        try:
            state = journal_state(training.out_dir)
        except TrackerError as e:
            raise UsageError(str(e)) from None
        if state is not None:
            log(f"notice: --resume: no checkpoint in {training.out_dir} yet; training starts again from "
                f"step 0 and continues tracker run {state['run_name']}")
            return None, state
    return load_checkpoint(training.out_dir), None


def restore(run, checkpoint):
    """Load model, optimizer, pruner, scaler and counters from a checkpoint."""
    run.raw_model.load_state_dict(checkpoint["model"])
    run.optimizer.load_state_dict(checkpoint["optimizer"])
    run.pruner.load_state_dict(checkpoint["pruner"])
    if checkpoint["scaler"]:
        run.scaler.load_state_dict(checkpoint["scaler"])
    run.iter_num = checkpoint["iter_num"]
    run.best_val_loss = checkpoint["best_val_loss"]
    run.training_time = checkpoint["training_time"]
    run.log(f"resuming from {Path(run.cfg.training.out_dir) / LATEST} at iter {run.iter_num}")


def resume_rng(run, checkpoint):
    """Put every random generator back where this rank's was at the checkpoint,
    so dropout and batches continue as if the run had never stopped."""
    states = checkpoint["rng"]
    if len(states) == run.dist.world_size:
        set_rng_state(states[run.dist.rank]["global"])
        run.batches.load_state_dict(states[run.dist.rank]["batches"])
        return
    run.log(
        f"notice: the checkpoint was written by {len(states)} processes, this run has "
        f"{run.dist.world_size}; batches and dropout continue from fresh seeds"
    )
    fresh_seed = run.cfg.training.seed + run.iter_num * run.dist.world_size + run.dist.rank
    torch.manual_seed(fresh_seed)
    run.batches.train_generator.manual_seed(fresh_seed)


def run_provenance(run):
    """config["provenance"] (lib/trackers/run_info.py): versions and git
    state, plus what only the run knows: the data it reads, the device and
    dtype it resolved, and the matmul library `--cpu-matmul auto` chose."""
    facts = {
        "data": data_fingerprint(run.batches.data_dir),
        "device": str(run.device),
        "dtype": run.precision.dtype,
        "compile": run.precision.compile,
        "deterministic": run.cfg.system.deterministic,
        "cpu_matmul": cpu_matmul.library_of(run.raw_model),
        "torch_threads": torch.get_num_threads(),
        "world_size": run.dist.world_size,
    }
    if run.device.type == "cuda":
        facts["gpu"] = torch.cuda.get_device_name(run.device)
    return provenance(**facts)


def open_run_trackers(run, checkpoint, train_args):
    """The configured trackers on rank 0 (continuing the checkpoint's runs
    when resuming); a no-op set on the other ranks.  Raises TrackerError.
    The run's config records every resolved flag, and `train_args`, the same
    as one command line (gpt2/cli.py command_line), to re-create the run."""
    if not run.dist.is_main:
        return null_trackers()
    return open_trackers(
        run.cfg.tracking,
        config={**run.flags, "train_args": train_args, "provenance": run_provenance(run)},
        out_dir=run.cfg.training.out_dir,
        resume_state=checkpoint.get("trackers") if checkpoint else run.tracker_resume_state,
    )
