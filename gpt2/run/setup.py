"""Building a training run from its typed configs (gpt2/configs.py): device,
data, model, optimizer, pruner, trackers, and with --resume the saved state,
wired once into a Trainer (gpt2/run/trainer.py).  gpt2/train.py, `make
bench` (scripts/bench/step.py) and the tests all start a run through build().

Order matters for an exact resume: every random generator is restored last
(resume_rng, called right before the first step), after everything that
might draw random numbers while being built.
"""

import os
import tempfile
import uuid
from dataclasses import asdict
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from gpt2.cpu import setup as cpu_setup
from gpt2.data.batches import Batches
from gpt2.data.prepare import DataError, data_fingerprint, ensure_prepared
from gpt2.errors import UsageError
from gpt2.model.pretrained import build_model
from gpt2.run.batch_probe import MAX_BATCH, auto_batch_size
from gpt2.run.batch_size import plan_batch
from gpt2.run.checkpoint import Checkpointer, has_checkpoint, load_checkpoint, set_rng_state
from gpt2.run.checkpoint_source import resolve_resume_from
from gpt2.run.distributed import cuda_index
from gpt2.run.health import run_health
from gpt2.run.mfu import mfu_peak
from gpt2.run.samples import training_sampler
from gpt2.run.trainer import Trainer
from lib.atomic import write_text_atomically
from lib.optim import build_optimizer
from lib.plugins import fixed_on_resume
from lib.pruning import build_pruner
from lib.trackers import journal_state, null_trackers, open_trackers
from lib.trackers.run_info import provenance


def prepared_data_dir(data, dist, log):
    """Rank 0 prepares (or finds) the dataset while the other ranks wait for
    its folder, or its error, without a collective (preparing can take hours:
    distributed.from_main); then every rank checks that it sees the same
    finished data there, which on several nodes takes a --data-dir they all
    share (or the same data prepared on each node beforehand).  Returns
    (the folder, its fingerprint for the run's record)."""

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
        raise DataError(answer["error"])
    folder = answer["fingerprint"]["folder"]
    missing = not dist.is_main and data_fingerprint(folder) != answer["fingerprint"]
    dist.check_all(
        f"--data-dir: {folder}, prepared by rank 0, is missing or different here; put --data-dir on a "
        "filesystem every node shares, or prepare the same data on each node first (gpt2/prepare_data.py)"
        if missing else None
    )
    return Path(folder), answer["fingerprint"]


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
    """--deterministic: deterministic kernels only (an operation that has
    none stops the run with one line naming it: gpt2/run/determinism.py,
    through gpt2/train.py main), and
    the cuBLAS workspace setting they need, set before cuBLAS starts.
    Bit-identical GPU runs and resumes, at a cost (README, "Checkpoints and resume")."""
    if system.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=False)
        torch.backends.cudnn.benchmark = False


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


def batch_plan(cfg, precision, dist, device, log):
    """(BatchPlan, BATCH_SIZE_AUTO's record or None): the micro-batch and
    accumulation of each rank (gpt2/run/batch_size.py), the micro-batch
    probed first on CUDA with --batch-size-auto (gpt2/run/batch_probe.py).
    A collective."""
    training, block = cfg.training, cfg.model.block_size
    # A total that does not divide: before any probing, and raised by every
    # rank at once (rank 0 decides: a collective), so rank 0 prints it.
    plan = dist.on_main(plan_batch, training, block, dist.world_size)
    upper = plan.sequences_per_rank if training.total_batch_tokens else MAX_BATCH
    size, record = auto_batch_size(cfg, precision, dist, device, log, upper=upper)
    return (plan_batch(training, block, dist.world_size, batch_size=size) if size else plan), record


def build_training(cfg, device):
    """Model, optimizer and pruner, with ValueErrors from lib/ turned into
    one-line usage errors."""
    model = build_model(cfg.model, device)  # random, or INIT_FROM's weights
    try:
        optimizer = build_optimizer(model, cfg.optimizer, cfg.optimizer_own)
        pruner = build_pruner(model, optimizer, cfg.pruning)
    except ValueError as e:
        raise UsageError(str(e)) from None
    return model, optimizer, pruner


def plain_flags(args):
    """The flags as plain values, for checkpoints and trackers."""
    return {k: v if isinstance(v, (str, int, float, bool, type(None))) else str(v) for k, v in vars(args).items()}


def build(cfg, flags, precision, dist, log, train_args, trackers=True):
    """The Trainer of `cfg` (the RunConfig; `flags`: the resolved flags as
    plain values, recorded in checkpoints and trackers; `train_args`: the
    same as one command line, to re-create the run).  With --resume it holds
    the checkpoint's state, except the random generators: call
    resume_rng(trainer, checkpoint) right before the first step.  Returns
    (trainer, checkpoint or None).  `trackers=False`: no tracker is opened
    (a tool that only builds the model)."""
    training = cfg.training
    use_deterministic(cfg.system)
    device = select_device(cfg.system, precision)
    dist.on_main(check_output_paths, training)
    check_shared_out_dir(training.out_dir, dist)  # before any rank looks for a checkpoint there
    checkpoint, tracker_state = resume_point(training, log)
    cpu = cpu_setup.choose(cfg.system, precision, device, dist, checkpoint and checkpoint.cpu_matmul, log)
    torch.manual_seed(training.seed + dist.rank)  # own dropout per rank; DDP copies rank 0's init to all
    config = cfg.model.gpt_config()
    plan, batch_record = batch_plan(cfg, precision, dist, device, log)
    if checkpoint:
        fixed = {**fixed_on_resume(cfg.optimizer), **fixed_on_resume(cfg.optimizer_own), **fixed_on_resume(cfg.pruning)}
        checkpoint.check_compatible(asdict(config), fixed)
    data_dir, data_record = prepared_data_dir(cfg.data, dist, log)
    batches = Batches(
        data_dir,
        block_size=config.block_size,
        batch_size=plan.batch_size,
        device=device,
        # TOTAL_BATCH_TOKENS: every rank draws the whole step, reads its part;
        # else each rank its own batches.
        train_seed=training.seed + 1 + (0 if training.total_batch_tokens else dist.rank),
        eval_seed=training.seed,  # every eval, on every rank, the same batches
        shard=(dist.rank, dist.world_size, plan.micro_steps) if training.total_batch_tokens else None,
    )
    raw_model, optimizer, pruner = build_training(cfg, device)
    cpu_setup.attach(raw_model, cpu, cfg.system)
    scaler = torch.amp.GradScaler(device.type, enabled=precision.dtype == "float16")
    model = wrap_for_training(raw_model, precision, dist, device)
    eval_model = torch.compile(raw_model) if precision.compile else raw_model
    tokens_per_iter = plan.tokens_per_iter
    log(
        f"model {cfg.model.model}: {config.n_layer} layers, {config.n_head} heads, {config.n_embd} wide, "
        f"block {config.block_size}, {raw_model.num_parameters() / 1e6:.2f}M parameters | "
        f"{device} {precision.dtype}{' compiled' if precision.compile else ''}{cpu.note()} | "
        f"{plan.describe()}"
    )
    if trackers:
        facts = {**run_facts(cfg, precision, dist, device, raw_model, data_record), "batch_size_auto": batch_record}
        trackers = open_run_trackers(cfg, dist, flags, train_args, facts,
                                     checkpoint.trackers if checkpoint else tracker_state)
    else:
        trackers = null_trackers()

    def record():
        return {
            "model_config": asdict(raw_model.config),
            "args": flags,
            "trackers": trackers.state_dict(),
            "cpu_matmul": cpu.library,  # --resume continues on the same arithmetic
        }

    parts = {"model": raw_model, "optimizer": optimizer, "pruner": pruner, "scaler": scaler}
    trainer = Trainer(
        cfg=cfg, precision=precision, dist=dist, device=device,
        raw_model=raw_model, model=model, eval_model=eval_model,
        optimizer=optimizer, pruner=pruner, scaler=scaler, batches=batches,
        micro_steps=plan.micro_steps, tokens_per_iter=tokens_per_iter, cpu=cpu,
        peak=mfu_peak(device, precision.dtype, cpu.flops, log) if dist.is_main else None,
        health=run_health(cfg, raw_model, device), sampler=training_sampler(cfg, dist),
        trackers=trackers, checkpoints=Checkpointer(training.out_dir, parts, record, keep=training.ckpt_keep), log=log,
    )  # fmt: skip
    if checkpoint:
        trainer.checkpoints.restore(checkpoint, trainer.state)
        log(f"resuming from {checkpoint.path} at iter {trainer.state.iter_num}")
    return trainer, checkpoint


def wrap_for_training(raw_model, precision, dist, device):
    """The module that trains: DDP around the model, then torch.compile
    around that (PyTorch's guidance for compile with DDP: its DDPOptimizer
    then splits the graph at the gradient buckets, so their all-reduce
    overlaps the backward pass).  gradient_as_bucket_view: the gradients
    live in DDP's buckets, no copy into them."""
    model = raw_model
    if dist.enabled:
        model = DistributedDataParallel(model, device_ids=[dist.local_rank] if device.type == "cuda" else None,
                                        gradient_as_bucket_view=True)
    return torch.compile(model) if precision.compile else model


def resume_point(training, log):
    """(checkpoint, tracker state) that --resume continues from: the
    latest complete checkpoint in --out-dir (or --resume-from's: a file or
    a tracker artifact); or, for a run stopped before its first
    checkpoint (the journal shows it started), no checkpoint, so training
    starts again from step 0, but the same tracker runs, so a tracker holds
    each step once.  (None, None) without --resume."""
    if training.resume_from:
        return resolve_resume_from(training.resume_from, log), None
    if not training.resume:
        return None, None
    if not has_checkpoint(training.out_dir):
        state = journal_state(training.out_dir)
        if state is not None:
            log(f"notice: --resume: no checkpoint in {training.out_dir} yet; training starts again from "
                f"step 0 and continues tracker run {state['run_name']}")
            return None, state
    return load_checkpoint(training.out_dir, log), None


def resume_rng(trainer, checkpoint):
    """Put every random generator back where this rank's was at the checkpoint,
    so dropout and batches continue as if the run had never stopped."""
    states, dist = checkpoint.rng, trainer.dist
    if len(states) == dist.world_size:
        set_rng_state(states[dist.rank]["global"])
        trainer.batches.load_state_dict(states[dist.rank]["batches"])
        return
    trainer.log(
        f"notice: the checkpoint was written by {len(states)} processes, this run has "
        f"{dist.world_size}; batches and dropout continue from fresh seeds"
    )
    fresh_seed = trainer.cfg.training.seed + trainer.state.iter_num * dist.world_size + dist.rank
    torch.manual_seed(fresh_seed)
    trainer.batches.train_generator.manual_seed(fresh_seed)


def run_facts(cfg, precision, dist, device, raw_model, data):
    """What only the built run knows, for its record: the data it reads
    (`data`: its fingerprint, from prepared_data_dir), the device and dtype
    it resolved, the CPU path it computes with."""
    facts = {
        "data": data,
        "device": str(device),
        "dtype": precision.dtype,
        "compile": precision.compile,
        "deterministic": cfg.system.deterministic,
        "cpu_matmul": cpu_setup.recorded_library(raw_model, device),
        "torch_threads": torch.get_num_threads(),
        "world_size": dist.world_size,
        "init_from": raw_model.init_source,  # INIT_FROM's source and weights sha256, or None
    }
    if device.type == "cuda":
        facts["gpu"] = torch.cuda.get_device_name(device)
    return facts


def open_run_trackers(cfg, dist, flags, train_args, facts, resume_state):
    """The configured trackers on rank 0 (continuing the checkpoint's runs
    when resuming); a no-op set on the other ranks.  Raises TrackerError.
    The run's config records every resolved flag, `train_args` and
    config["provenance"] (lib/trackers/run_info.py: versions and git state,
    plus `facts`)."""
    if not dist.is_main:
        return null_trackers()
    return open_trackers(
        cfg.tracking,
        config={**flags, "train_args": train_args, "provenance": provenance(**facts)},
        out_dir=cfg.training.out_dir,
        resume_state=resume_state,
    )
