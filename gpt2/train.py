"""Train GPT-2 on a prepared token dataset, on one process or several (DDP).

    python gpt2/train.py --device cpu --max-iters 100            # one process
    torchrun --standalone --nproc-per-node 8 gpt2/train.py       # 8 GPUs

Flags: gpt2/cli.py (defaults from Kconfig; `make train` passes .config's).
gpt2/run_setup.py builds the run (device, data, model, optimizer, resume
state); this file reads top to bottom: one training step, evaluation and
checkpoint, the loop, the final report, main().

Iterations count optimizer steps done: "iter 100" and "eval 100" come after
the 100th step, and a checkpoint at 100 resumes into step 101.  An eval line
is printed once its checkpoint is on disk.
"""

# Run as a file (the commands above, and torchrun's workers), Python puts
# gpt2/ first on sys.path, where its modules (errors.py, schedule.py,
# distributed.py, ...) could shadow packages of the same name: run the same
# command as the module gpt2.train instead, keeping the interpreter's own
# options (torchrun's -u).  Nothing runs before this.
if __name__ == "__main__" and not __package__:
    import os
    import sys

    _options = sys.orig_argv[1 : len(sys.orig_argv) - len(sys.argv)]
    os.execv(sys.executable, [sys.executable, *_options, "-m", "gpt2.train", *sys.argv[1:]])

import json
import math
import sys
import time
from contextlib import nullcontext

import torch

from gpt2 import cli, distributed
from gpt2.checkpoint import rng_state, save_checkpoint
from gpt2.errors import NonFiniteLossError, UsageError
from gpt2.mfu import model_flops_utilization
from gpt2.prepare_data import DataError
from gpt2.configs import RunConfig
from gpt2.run_config import model_config_dict, resolve_precision
from gpt2.run_setup import open_run_trackers, plain_flags, resume_rng, setup
from gpt2.schedule import learning_rate
from lib.atomic import write_text_atomically
from lib.pruning import sparsity
from lib.trackers import TrackerError


def log_line(message):
    # flush: lines reach a pipe (make, a test watching the output) at once.
    print(message, flush=True)


def no_log(message):
    """The log of ranks other than 0."""


# ----------------------------------------------------------------------------
# One optimizer step, evaluation, checkpoint


def train_step(run, lr):
    """Forward/backward over the micro-batches, then clip -> step -> prune ->
    zero_grad.  Returns the mean loss as a device tensor (no sync); the
    gradient norm clipping returns goes to run.health (gpt2/health.py)."""
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    loss_sum = torch.zeros((), device=run.device)
    for micro_step in range(run.micro_steps):
        # DDP all-reduces gradients on every backward; only the last
        # micro-step's is needed, so the others skip it.
        last = micro_step == run.micro_steps - 1
        sync = run.model.no_sync() if run.dist.enabled and not last else nullcontext()
        x, y = run.batches.next_train()
        with sync:
            with run.precision.autocast():
                _, loss = run.model(x, y)
            run.scaler.scale(loss / run.micro_steps).backward()
        loss_sum += loss.detach()
    if run.cfg.training.grad_clip > 0:
        run.scaler.unscale_(run.optimizer)  # clip the true gradients, not scaled ones
        # All-reduced gradients: the norm of the whole model on every rank.
        norm = torch.nn.utils.clip_grad_norm_(run.raw_model.parameters(), run.cfg.training.grad_clip)
        run.health.record_grad_norm(norm)
    ratios = run.dist.is_main and run.health.wants_update_ratio(run.iter_num)
    if ratios:
        run.health.before_step()
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.pruner.step(run.iter_num)
    run.optimizer.zero_grad(set_to_none=True)
    if ratios:
        run.trackers.log(run.health.update_ratios(), step=run.iter_num + 1)
    return loss_sum / run.micro_steps


@torch.no_grad()
def estimate_losses(run):
    """Mean loss over the same eval_iters batches of each split."""
    run.eval_model.eval()
    losses = {}
    for split in ("train", "val"):
        total = torch.zeros((), device=run.device)
        for x, y in run.batches.eval_batches(split, run.cfg.training.eval_iters):
            with run.precision.autocast():
                _, loss = run.eval_model(x, y)
            total += loss
        losses[split] = (total / run.cfg.training.eval_iters).item()
    run.eval_model.train()
    return losses


def check_finite(run, losses, what):
    """Stop every rank if any rank saw an inf/NaN loss (before any checkpoint)."""
    broken = not all(math.isfinite(v) for v in losses)
    if run.dist.any_rank(broken, run.device):
        error = NonFiniteLossError(
            f"{what} is not finite ({', '.join(f'{v:g}' for v in losses)}) at iter {run.iter_num}: "
            "training diverged; lower --learning-rate or set --grad-clip "
            "(no checkpoint was written for this iteration)"
        )
        if run.dist.is_main:
            run.trackers.alert("training stopped: loss not finite", str(error), "ERROR")
        raise error


def checkpoint_state(run, rng_states):
    return {
        "model": run.raw_model.state_dict(),
        "model_config": model_config_dict(run.raw_model.config),
        "optimizer": run.optimizer.state_dict(),
        "pruner": run.pruner.state_dict(),
        "scaler": run.scaler.state_dict(),
        "iter_num": run.iter_num,
        "best_val_loss": run.best_val_loss,
        "training_time": run.training_time,
        "rng": rng_states,  # one entry per rank
        "args": run.flags,
        "trackers": run.trackers.state_dict(),
    }


def evaluate(run):
    """Estimate losses (rank 0), then checkpoint unless at iteration 0."""
    losses = estimate_losses(run) if run.dist.is_main else {}
    check_finite(run, list(losses.values()), "the eval loss")
    # Collective: every rank's generators, so a resumed DDP run continues
    # each rank's batches too.
    rng_states = run.dist.gather({"global": rng_state(), "batches": run.batches.state_dict()})
    if not run.dist.is_main:
        return losses
    line = f"eval {run.iter_num} | train {losses['train']:.4f} | val {losses['val']:.4f}"
    if run.iter_num > 0:  # the untrained model is not worth a checkpoint
        is_best = losses["val"] < run.best_val_loss
        run.best_val_loss = min(run.best_val_loss, losses["val"])
        save_checkpoint(run.cfg.training.out_dir, checkpoint_state(run, rng_states), is_best)
        line += f" | best {run.best_val_loss:.4f}"
    # exp() overflows a float past 709; a loss that high is noise anyway.
    perplexity = math.exp(min(losses["val"], 700.0))
    run.trackers.log({"val/loss": losses["val"], "val/perplexity": perplexity}, step=run.iter_num)
    run.log(line)
    if run.sampler and run.sampler.due(run.iter_num, last=run.iter_num >= run.cfg.training.max_iters):
        text = run.sampler.sample(run.raw_model, run.device)
        run.sampler.log(run, text, run.sampler.last_seconds)
    return losses


# ----------------------------------------------------------------------------
# The loop


def report_progress(run, loss, lr, seconds_per_iter):
    """Console line and tracker metrics of one log interval."""
    tokens_per_sec = run.tokens_per_iter / seconds_per_iter
    current_sparsity = sparsity(run.raw_model)
    metrics = {
        "train/loss": loss,
        "train/lr": lr,
        "train/sparsity": current_sparsity,
        "train/tokens_per_sec": tokens_per_sec,
        **run.health.interval_metrics(),  # train/grad_norm, train/clip_fraction, sys/peak_memory_gb
    }
    line = (
        f"iter {run.iter_num} | loss {loss:.4f} | lr {lr:.2e} | {seconds_per_iter * 1000:.1f} ms/iter"
        f" | {tokens_per_sec:,.0f} tok/s"
    )
    if run.peak_flops:
        mfu = model_flops_utilization(
            run.raw_model.flops_per_token(), tokens_per_sec, run.peak_flops, run.dist.world_size
        )
        metrics["train/mfu"] = mfu
        line += f" | mfu {mfu * 100:.1f}%"
    run.trackers.log(metrics, step=run.iter_num)
    run.log(line + f" | sparsity {current_sparsity:.2f}")
    spike = run.health.loss_spike(loss)
    if spike:
        run.trackers.alert("loss spike", f"iter {run.iter_num}: {spike}", "WARN")


def out_of_time(run):
    """Whether --max-time is used up (all ranks agree: one tiny collective
    per step under DDP, only when a limit is set)."""
    max_time = run.cfg.training.max_time
    if max_time <= 0:
        return False
    return run.dist.any_rank(run.training_time >= max_time, run.device)


def loop(run):
    """Train until --max-iters or --max-time; returns the last eval's losses."""
    training = run.cfg.training
    session_start = time.time()
    base_time = run.training_time
    done = run.iter_num >= training.max_iters
    # The untrained model's loss (about ln(50304) = 10.8), or, resuming a
    # finished run, the final losses again.
    losses = evaluate(run) if run.iter_num == 0 or done else None
    interval_start, interval_iters = time.time(), 0
    while not done:
        lr = learning_rate(
            run.iter_num,
            max_lr=training.learning_rate,
            min_lr=training.min_lr,
            warmup_iters=training.warmup_iters,
            decay_iters=training.decay_iters,
        )
        loss = train_step(run, lr)
        run.iter_num += 1
        interval_iters += 1
        run.training_time = base_time + time.time() - session_start
        if run.iter_num % training.log_interval == 0:
            loss_value = loss.item()  # host-device syncs happen only here, once per log interval
            check_finite(run, [loss_value], "the training loss")
            if run.dist.is_main:
                report_progress(run, loss_value, lr, (time.time() - interval_start) / interval_iters)
            interval_start, interval_iters = time.time(), 0
        done = run.iter_num >= training.max_iters or out_of_time(run)
        if done or run.iter_num % training.eval_interval == 0:
            losses = evaluate(run)
            interval_start, interval_iters = time.time(), 0
    run.training_time = base_time + time.time() - session_start
    return losses


def final_metrics(run, losses):
    tokens_seen = run.iter_num * run.tokens_per_iter
    losses = losses or {}
    return {
        "best_val_loss": run.best_val_loss if math.isfinite(run.best_val_loss) else None,
        "final_train_loss": losses.get("train"),
        "final_val_loss": losses.get("val"),
        "total_training_time": run.training_time,
        "tokens_seen": tokens_seen,
        "tokens_per_sec": tokens_seen / run.training_time if run.training_time > 0 else 0.0,
        "sparsity": sparsity(run.raw_model),
        "peak_memory_gb": run.health.peak_memory_gb,
        "iterations": run.iter_num,
    }


def write_json(path, metrics):
    write_text_atomically(path, json.dumps(metrics, indent=2) + "\n")


def report_final(run, losses):
    """Rank 0's end of a run: final metrics to the trackers, the JSON file
    and the console."""
    metrics = final_metrics(run, losses)
    run.trackers.summary(metrics)
    if run.cfg.training.json_output:
        write_json(run.cfg.training.json_output, metrics)
    done = (
        f"{run.iter_num} iters in {run.training_time:.1f} s | "
        f"best val {metrics['best_val_loss']:.4f} | {metrics['tokens_per_sec']:,.0f} tok/s"
        f" | peak memory {metrics['peak_memory_gb']:.2f} GB"
    )
    run.log(f"done: {done}")
    run.trackers.alert("run finished", done, "INFO")
    return metrics


def train(args, log=log_line):
    """Run one training job from parsed flags (gpt2/cli.py); returns the final
    metrics (rank 0; other ranks return None).  The flags become the typed
    configs here, once; nothing after this reads `args`."""
    cfg = RunConfig.from_flags(vars(args))
    precision = resolve_precision(cfg.system, log=log if distributed.launched_rank() == 0 else no_log)
    dist = distributed.start(precision.device_type)
    try:
        log = log if dist.is_main else no_log
        run, checkpoint = setup(cfg, plain_flags(args), precision, dist, log)
        run.trackers = open_run_trackers(run, checkpoint, train_args=cli.command_line(args))
        try:
            if checkpoint:
                resume_rng(run, checkpoint)
                checkpoint = None  # its tensors are copied into the run; free them for the whole training
            losses = loop(run)
            metrics = report_final(run, losses) if dist.is_main else None
        finally:
            run.trackers.finish()
        # The other ranks wait here until rank 0 has written its files, so
        # no rank tears the process group down under another still using it.
        dist.barrier()
        return metrics
    finally:
        distributed.stop(dist)


def main(argv=None):
    """Command-line entry point.  Exit status 0; 1 after an error a user can
    fix (one `error:` line on stderr, no traceback); 130 after Ctrl-C."""
    args = cli.parse_args(argv)
    try:
        train(args)
        return 0
    except (UsageError, DataError, TrackerError, NonFiniteLossError) as e:
        message, status = f"error: {e}", 1
    except OSError as e:  # a file or folder of the run cannot be written or read (full disk, permissions)
        message, status = f"error: {e.strerror or e}: {e.filename}; check --out-dir, --data-dir and --json-output", 1
    except KeyboardInterrupt:
        message, status = f"interrupted; --resume continues from the last checkpoint in {args.out_dir}", 130
    if distributed.launched_rank() == 0:
        print(message, file=sys.stderr, flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
