"""Train GPT-2 on a prepared token dataset, on one process or several (DDP).

    python gpt2/train.py --device cpu --max-iters 100            # one process
    torchrun --standalone --nproc-per-node 8 gpt2/train.py       # 8 GPUs

Flags: gpt2/cli.py (defaults from Kconfig; `make train` passes .config's).
gpt2/run/setup.py builds the run (device, data, model, optimizer, resume
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
import os
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from gpt2 import cli
from gpt2.run import distributed
from gpt2.data.batches import SPLITS
from gpt2.run.checkpoint import LATEST, rng_state, save_checkpoint
from gpt2.errors import NonFiniteLossError
from gpt2.run.mfu import above_peak_warning, model_flops_utilization
from gpt2.run.out_dir_lock import out_dir_lock
from gpt2.run.preemption import StopSignals, StoppedBySignal, signal_name
from gpt2.configs import RunConfig
from gpt2.run.precision import model_config_dict, resolve_precision
from gpt2.run.setup import matmul_name, matmul_path, open_run_trackers, plain_flags, resume_rng, setup
from gpt2.run.schedule import build_schedule
from lib.atomic import write_text_atomically
from lib.pruning import layer_sparsity, save_masks, sparsity
from lib.errors import UserError


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
    gradient norm clipping returns goes to run.health (gpt2/run/health.py)."""
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
    scale = run.scaler.get_scale() if run.scaler.is_enabled() else None  # float16: one sync per step
    run.scaler.step(run.optimizer)
    run.scaler.update()
    # The scaler lowers its scale when it skipped the step for inf/NaN
    # gradients: movement pruning must not add those to its scores.
    run.pruner.step(run.iter_num, observe=scale is None or run.scaler.get_scale() >= scale)
    run.optimizer.zero_grad(set_to_none=True)
    if ratios:
        run.trackers.log(run.health.update_ratios(), step=run.iter_num + 1)
    return loss_sum / run.micro_steps


@torch.no_grad()
def estimate_losses(run):
    """Mean loss over the same eval_iters batches of each split, shared out
    over the ranks: rank r scores batches r, r + world_size, ...; summing the
    per-batch losses over the ranks (zeros elsewhere: exact) gives every
    rank the numbers one process computes."""
    count, ranks = run.cfg.training.eval_iters, run.dist.world_size
    losses = torch.zeros(len(SPLITS), count, device=run.device)
    run.eval_model.eval()
    for row, split in enumerate(SPLITS):
        for i, (x, y) in enumerate(run.batches.eval_batches(split, count)):
            if i % ranks == run.dist.rank:
                with run.precision.autocast():
                    _, loss = run.eval_model(x, y)
                losses[row, i] = loss
    run.eval_model.train()
    losses = run.dist.all_reduce_sum(losses)
    means = {}
    for row, split in enumerate(SPLITS):
        total = torch.zeros((), device=run.device)
        for loss in losses[row]:  # in order, one by one: the sums of runs before the sharding, to the bit
            total += loss
        means[split] = (total / count).item()
    return means


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
        "cpu_matmul": matmul_path(run),  # --resume continues on the same arithmetic
    }


def evaluate(run):
    """Estimate losses (every rank its share), then checkpoint (rank 0)
    unless at iteration 0."""
    losses = estimate_losses(run)
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
        save_masks(run.cfg.training.out_dir, run.pruner, run.iter_num)  # masks.pt, one bit per weight
        line += f" | best {run.best_val_loss:.4f}"
    # exp() overflows a float past 709; a loss that high is noise anyway.
    perplexity = math.exp(min(losses["val"], 700.0))
    metrics = {"val/loss": losses["val"], "val/perplexity": perplexity}
    metrics.update(layer_sparsity(run.pruner))  # sparsity/<layer>, when pruning
    run.trackers.log(metrics, step=run.iter_num)
    run.log(line)
    if run.sampler and run.sampler.due(run.iter_num, last=run.iter_num >= run.cfg.training.max_iters):
        text = run.sampler.sample(run.raw_model, run.device)
        run.sampler.log(run, text, run.sampler.last_seconds)
    return losses


def save_at_stop(run, loss):
    """Checkpoint at this step without evaluating (a stop on a signal between
    evaluations: the grace period is short); every rank's generators, as in
    evaluate(), and never a diverged model (`loss`: this step's).  A collective."""
    check_finite(run, [loss.item()], "the training loss")
    rng_states = run.dist.gather({"global": rng_state(), "batches": run.batches.state_dict()})
    if run.dist.is_main:
        save_checkpoint(run.cfg.training.out_dir, checkpoint_state(run, rng_states), is_best=False)
        run.log(f"checkpoint {run.iter_num} | written on {signal_name(run.stopped_by)}")


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
        if mfu > 1.0 and not run.mfu_warned:  # only an underestimated peak does that: say so, once
            run.mfu_warned = True
            run.log(above_peak_warning(mfu, run.peak_flops, run.device))
    run.trackers.log(metrics, step=run.iter_num)
    run.log(line + f" | sparsity {current_sparsity:.2f}")
    spike = run.health.loss_spike(loss)
    if spike:
        run.trackers.alert("loss spike", f"iter {run.iter_num}: {spike}", "WARN")


def stop_reason(run):
    """None to go on; "time" once --max-time is used up; or the number of
    the signal (gpt2/run/preemption.py) that asks this run to stop.  Every rank
    gets the same answer at the same step: one tiny collective per step
    under DDP, a second one only when stopping."""
    max_time = run.cfg.training.max_time
    signalled = run.stop is not None and run.stop.received is not None
    if not run.dist.any_rank(signalled or 0 < max_time <= run.training_time, run.device):
        return None
    signals = [signum for signum in run.dist.gather(run.stop.received if signalled else None) if signum]
    return signals[0] if signals else "time"


def exclude_compile_step(run, loss, interval_start, interval_iters):
    """After a compiled session's first step: one line with its time
    (mostly torch.compile building the graph), and the log interval's clock
    restarted after it, so the first tok/s and MFU are of trained steps.
    When that step alone ends an interval (--log-interval 1), the interval
    keeps it: the line above says why it is slow."""
    loss.item()  # wait for the step
    alone = run.iter_num % run.cfg.training.log_interval == 0
    note = "the next line's speed includes it" if alone else "not counted in the first interval's speed"
    run.log(f"iter {run.iter_num}: {time.time() - interval_start:.1f} s including torch.compile ({note})")
    return (interval_start, interval_iters) if alone else (time.time(), 0)


def loop(run):
    """Train until --max-iters, --max-time or a stop signal (then
    run.stopped_by is set); returns the last eval's losses."""
    training = run.cfg.training
    session_start = time.time()
    base_time = run.training_time
    done = run.iter_num >= training.max_iters
    # The untrained model's loss (about ln(50304) = 10.8), or, resuming a
    # finished run, the final losses again.
    losses = evaluate(run) if run.iter_num == 0 or done else None
    interval_start, interval_iters = time.time(), 0
    compiling = run.precision.compile  # the session's first step builds the training graph
    schedule = build_schedule(training)
    while not done:
        lr = schedule(run.iter_num)
        loss = train_step(run, lr)
        run.iter_num += 1
        interval_iters += 1
        run.training_time = base_time + time.time() - session_start
        if compiling:  # its compile time is not a step's: said apart, left out of the interval's speed
            compiling = False
            interval_start, interval_iters = exclude_compile_step(run, loss, interval_start, interval_iters)
        if run.iter_num % training.log_interval == 0:
            loss_value = loss.item()  # host-device syncs happen only here, once per log interval
            check_finite(run, [loss_value], "the training loss")
            if run.dist.is_main:
                report_progress(run, loss_value, lr, (time.time() - interval_start) / interval_iters)
            interval_start, interval_iters = time.time(), 0
        reason = None if run.iter_num >= training.max_iters else stop_reason(run)
        done = reason is not None or run.iter_num >= training.max_iters
        if reason not in (None, "time"):
            run.stopped_by = reason
        if run.stopped_by and run.iter_num % training.eval_interval:
            save_at_stop(run, loss)  # no evaluation: the resumed run goes on as if never stopped
        elif done or run.iter_num % training.eval_interval == 0:
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
    library = matmul_path(run)
    done = (
        f"{run.iter_num} iters in {run.training_time:.1f} s | "
        f"best val {metrics['best_val_loss']:.4f} | {metrics['tokens_per_sec']:,.0f} tok/s"
        f" | peak memory {metrics['peak_memory_gb']:.2f} GB"
        + (f" | {matmul_name(library)} matmuls" if library else "")
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
    dist = distributed.start(precision.device_type, cfg.system.dist_timeout)
    try:
        log = log if dist.is_main else no_log
        # One run per --out-dir (gpt2/run/out_dir_lock.py), for the whole run.
        with out_dir_lock(cfg.training.out_dir, dist):
            run, checkpoint = setup(cfg, plain_flags(args), precision, dist, log)
            run.trackers = open_run_trackers(run, checkpoint, train_args=cli.command_line(args))
            # SIGTERM, SIGUSR1 and SIGINT stop the loop with a checkpoint
            # (gpt2/run/preemption.py), and cannot cut the trackers' closing short.
            with StopSignals(announce=dist.is_main) as run.stop:
                try:
                    if checkpoint:
                        resume_rng(run, checkpoint)
                        checkpoint = None  # its tensors are copied into the run; free them for the whole training
                    losses = loop(run)
                    metrics = report_final(run, losses) if dist.is_main and not run.stopped_by else None
                finally:
                    run.trackers.finish()
                # The other ranks wait here until rank 0 has written its files, so
                # no rank tears the process group down under another still using it.
                dist.barrier()
            if run.stopped_by:
                raise StoppedBySignal(run.stopped_by, run.iter_num, Path(cfg.training.out_dir) / LATEST, run.stop)
            return metrics
    finally:
        distributed.stop(dist)


def main(argv=None):
    """Command-line entry point.  Exit status 0; 1 after an error a user can
    fix (one `error:` line on stderr, no traceback); 128 + the signal's
    number after a stop on SIGTERM (143), SIGUSR1 (138) or SIGINT/Ctrl-C
    (130) during training, with a checkpoint at the step it stopped at
    (gpt2/run/preemption.py); 130 also after Ctrl-C before training started
    (then --resume continues from the last checkpoint, if any)."""
    args = cli.parse_args(argv)
    stopped = None
    try:
        train(args)
        return 0
    except UserError as e:
        message, status = f"error: {e}", 1
    except OSError as e:  # a file or folder of the run cannot be written or read (full disk, permissions)
        message, status = f"error: {e.strerror or e}: {e.filename}; check --out-dir, --data-dir and --json-output", 1
    except StoppedBySignal as e:
        message, status, stopped = str(e), e.status, e.signals
    except KeyboardInterrupt:
        message, status = f"interrupted; --resume continues from the last checkpoint in {args.out_dir}", 130
    if distributed.launched_rank() == 0:
        print(message, file=sys.stderr, flush=True)
    # After a stop the signal handlers are held until the line is out
    # (gpt2/run/preemption.py).  A torchrun worker then ignores them to its exit:
    # torchrun sends SIGTERM to the workers left once one has exited.
    if stopped is not None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        stopped.ignore()
    elif stopped is not None:
        stopped.restore()
    return status


if __name__ == "__main__":
    sys.exit(main())
