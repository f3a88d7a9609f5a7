"""The Trainer: one optimizer step, evaluation and checkpoint, the loop, the
final report.  Its wiring (model, optimizer, pruner, data, trackers, ...) is
built once by gpt2/run/setup.py and frozen; what changes as it trains is its
TrainState (gpt2/run/state.py), which the checkpoint saves.

An eval line is printed once its checkpoint is on disk.  Host-device syncs
happen once per log interval (the loss), at evaluations, and under DDP every
STOP_CHECK_STEPS steps (does any rank want to stop?).
"""

import functools
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable

import torch

from gpt2.configs import RunConfig
from gpt2.cpu.setup import CpuPath
from gpt2.data.batches import SPLITS, Batches
from gpt2.errors import NonFiniteLossError
from gpt2.eval.training import hellaswag_during_training
from gpt2.model.gpt import GPT
from gpt2.run.checkpoint import Checkpointer, rng_state
from gpt2.run.distributed import Distributed
from gpt2.run.health import RunHealth
from gpt2.run.mfu import Peak
from gpt2.run.precision import Precision
from gpt2.run.preemption import signal_name
from gpt2.run.samples import TrainingSampler
from gpt2.run.schedule import build_schedule
from gpt2.run.state import TrainState
from lib.pruning import Pruner, layer_sparsity, save_masks, sparsity
from lib.trackers import Trackers

# Under DDP, asking every rank whether one wants to stop (a signal, the time
# budget) is a collective and a host sync: done every this many steps, at
# the same steps on every rank, so every rank stops at the same step.
STOP_CHECK_STEPS = 10


@dataclass(frozen=True)
class Trainer:
    """One training run.  `cfg` is the RunConfig (gpt2/configs.py)."""

    cfg: RunConfig
    precision: Precision
    dist: Distributed
    device: torch.device
    raw_model: GPT  # unwrapped: what checkpoints hold
    model: torch.nn.Module  # DDP-wrapped and/or compiled: what trains
    eval_model: torch.nn.Module  # compiled, never DDP: each rank evaluates its share of the batches
    optimizer: torch.optim.Optimizer
    pruner: Pruner
    scaler: torch.amp.GradScaler
    batches: Batches
    micro_steps: int  # gradient-accumulation steps on this rank
    tokens_per_iter: int  # over all ranks
    cpu: CpuPath
    peak: Peak | None  # MFU's denominator, never below what the run achieves (rank 0 only)
    health: RunHealth
    sampler: TrainingSampler | None  # rank 0, with --sample-interval > 0
    trackers: Trackers
    checkpoints: Checkpointer
    log: Callable[[str], None]
    state: TrainState = field(default_factory=TrainState)

    # ------------------------------------------------------------------
    # One optimizer step

    def train_step(self, lr):
        """Forward/backward over the micro-batches, then clip -> step ->
        prune -> zero_grad.  Returns the mean loss as a device tensor (no
        sync).  The gradient norm is measured every step (clip_grad_norm_
        with an infinite bound when clipping is off: the same cost) and
        goes to the health monitor (gpt2/run/health.py)."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss_sum = torch.zeros((), device=self.device)
        for micro_step in range(self.micro_steps):
            # DDP all-reduces gradients on every backward; only the last
            # micro-step's is needed, so the others skip it.
            last = micro_step == self.micro_steps - 1
            sync = self.model.no_sync() if self.dist.enabled and not last else nullcontext()
            x, y = self.batches.next_train()
            with sync:
                with self.precision.autocast():
                    # [1]: the logits are not kept alive through backward.
                    loss = self.model(x, y)[1]
                self.scaler.scale(loss / self.micro_steps).backward()
            loss_sum += loss.detach()
        self.scaler.unscale_(self.optimizer)  # the true gradients, not scaled ones
        # All-reduced gradients: the norm of the whole model on every rank.
        bound = self.cfg.training.grad_clip if self.cfg.training.grad_clip > 0 else math.inf
        self.health.record_grad_norm(torch.nn.utils.clip_grad_norm_(self.raw_model.parameters(), bound))
        ratios = self.dist.is_main and self.health.wants_update_ratio(self.state.iter_num)
        if ratios:
            self.health.before_step()
        scale = self.scaler.get_scale() if self.scaler.is_enabled() else None  # float16: one sync per step
        self.scaler.step(self.optimizer)
        self.scaler.update()
        # The scaler lowers its scale when it skipped the step for inf/NaN
        # gradients: movement pruning must not add those to its scores.
        if self.pruner.step(self.state.iter_num, observe=scale is None or self.scaler.get_scale() >= scale):
            # best.pt of a pruning run is its best model at the target
            # sparsity: the denser checkpoints before are no candidates.
            self.state.best_val_loss = math.inf
        self.optimizer.zero_grad(set_to_none=True)
        if ratios:
            self.trackers.log(self.health.update_ratios(), step=self.state.iter_num + 1)
        return loss_sum / self.micro_steps

    # ------------------------------------------------------------------
    # Evaluation and checkpoints

    @torch.no_grad()
    def estimate_losses(self):
        """Mean loss over the same eval_iters batches of each split, shared
        out over the ranks: rank r scores (and reads) batches r, r +
        world_size, ...; summing the per-batch losses over the ranks (zeros
        elsewhere: exact) gives every rank the numbers one process computes."""
        count = self.cfg.training.eval_iters
        losses = torch.zeros(len(SPLITS), count, device=self.device)
        self.eval_model.eval()
        for row, split in enumerate(SPLITS):
            for i, (x, y) in self.batches.eval_batches(split, count, self.dist.rank, self.dist.world_size):
                with self.precision.autocast():
                    losses[row, i] = self.eval_model(x, y)[1]
        self.eval_model.train()
        losses = self.dist.all_reduce_sum(losses)
        means = {}
        for row, split in enumerate(SPLITS):
            total = torch.zeros((), device=self.device)
            for loss in losses[row]:  # in order, one by one: the sums of runs before the sharding, to the bit
                total += loss
            means[split] = (total / count).item()
        return means

    def check_finite(self, losses, what):
        """Stop every rank if any rank saw an inf/NaN loss (before any checkpoint)."""
        broken = not all(math.isfinite(v) for v in losses)
        if self.dist.any_rank(broken, self.device):
            error = NonFiniteLossError(
                f"{what} is not finite ({', '.join(f'{v:g}' for v in losses)}) at iter {self.state.iter_num}: "
                "training diverged; lower --learning-rate or set --grad-clip "
                "(no checkpoint was written for this iteration)"
            )
            if self.dist.is_main:
                self.trackers.alert("training stopped: loss not finite", str(error), "ERROR")
            raise error

    def save(self, is_best):
        """Checkpoint this step (a collective: every rank's generators, so a
        resumed DDP run continues each rank's batches too; rank 0 writes)."""
        rng = self.dist.gather({"global": rng_state(), "batches": self.batches.state_dict()})
        if self.dist.is_main:
            self.checkpoints.save(self.state, rng, is_best, step=self.step_checkpoint_due())
            if self.cfg.tracking.log_checkpoints:  # LOG_CHECKPOINTS: lib/trackers/artifacts.py
                self.trackers.log_checkpoint(self.checkpoints.latest, is_best)
            save_masks(self.cfg.training.out_dir, self.pruner, self.state.iter_num)  # masks.pt, one bit per weight

    def step_checkpoint_due(self):
        """Whether this step also gets a step checkpoint (CKPT_INTERVAL)."""
        interval = self.cfg.training.ckpt_interval
        return interval > 0 and self.state.iter_num % interval == 0

    def save_between_evals(self, loss, why):
        """Checkpoint at this step without evaluating: a CKPT_INTERVAL step
        checkpoint, or a stop on a signal (the grace period is short); never
        a diverged model (`loss`: this step's).  A collective."""
        self.check_finite([loss.item()], "the training loss")
        self.save(is_best=False)
        if self.dist.is_main:
            self.log(f"checkpoint {self.state.iter_num} | {why}")

    def evaluate(self):
        """Estimate losses (every rank its share), then checkpoint (rank 0)
        unless at iteration 0."""
        losses = self.estimate_losses()
        self.check_finite(list(losses.values()), "the eval loss")
        state = self.state
        is_best = losses["val"] < state.best_val_loss
        if state.iter_num > 0:  # the untrained model is not worth a checkpoint
            state.best_val_loss = min(state.best_val_loss, losses["val"])
            self.save(is_best)
        hellaswag_during_training(self)  # EVAL_HELLASWAG_INTERVAL (every rank: a collective)
        if not self.dist.is_main:
            return losses
        line = f"eval {state.iter_num} | train {losses['train']:.4f} | val {losses['val']:.4f}"
        if state.iter_num > 0:
            line += f" | best {state.best_val_loss:.4f}"
        # exp() overflows a float past 709; a loss that high is noise anyway.
        perplexity = math.exp(min(losses["val"], 700.0))
        metrics = {"val/loss": losses["val"], "val/perplexity": perplexity}
        metrics.update(layer_sparsity(self.pruner))  # sparsity/<layer>, when pruning
        self.trackers.log(metrics, step=state.iter_num)
        self.log(line)
        if self.sampler and self.sampler.due(state.iter_num, last=state.iter_num >= self.cfg.training.max_iters):
            text = self.sampler.sample(self.raw_model, self.device)
            self.sampler.log(self, text, self.sampler.last_seconds)
        return losses


    # ------------------------------------------------------------------
    # The loop

    def report_progress(self, loss, lr, seconds_per_iter):
        """Console line and tracker metrics of one log interval (rank 0)."""
        tokens_per_sec = self.tokens_per_iter / seconds_per_iter
        current_sparsity = sparsity(self.raw_model)
        metrics = {
            "train/loss": loss,
            "train/lr": lr,
            "train/sparsity": current_sparsity,
            "train/tokens_per_sec": tokens_per_sec,
            **self.health.interval_metrics(),  # train/grad_norm, train/clip_fraction, sys/peak_memory_gb
        }
        line = (
            f"iter {self.state.iter_num} | loss {loss:.4f} | lr {lr:.2e} | {seconds_per_iter * 1000:.1f} ms/iter"
            f" | {tokens_per_sec:,.0f} tok/s"
        )
        if self.peak:  # never above 100%: an underestimated peak is raised (gpt2/run/mfu.py)
            mfu = self.peak.utilization(self.raw_model.flops_per_token(), tokens_per_sec, self.dist.world_size)
            metrics["train/mfu"] = mfu
            line += f" | mfu {mfu * 100:.1f}%"
        self.trackers.log(metrics, step=self.state.iter_num)
        self.log(line + f" | sparsity {current_sparsity:.2f}")
        spike = self.health.loss_spike(loss)
        if spike:
            self.trackers.alert("loss spike", f"iter {self.state.iter_num}: {spike}", "WARN")

    def stop_reason(self, stop):
        """None to go on; "time" once --max-time is used up; or the number
        of the signal that asks this run to stop (`stop`: the StopSignals of
        gpt2/run/preemption.py, or None).  Every rank gets the same answer at
        the same step: under DDP a tiny collective every STOP_CHECK_STEPS
        steps, a second one only when stopping."""
        if self.dist.enabled and self.state.iter_num % STOP_CHECK_STEPS:
            return None
        max_time = self.cfg.training.max_time
        signalled = stop is not None and stop.received is not None
        if not self.dist.any_rank(signalled or 0 < max_time <= self.state.training_time, self.device):
            return None
        signals = [signum for signum in self.dist.gather(stop.received if signalled else None) if signum]
        return signals[0] if signals else "time"

    def exclude_compile_step(self, loss, interval_start, interval_iters):
        """After a compiled session's first step: one line with its time
        (mostly torch.compile building the graph), and the log interval's
        clock restarted after it, so the first tok/s and MFU are of trained
        steps.  When that step alone ends an interval (--log-interval 1),
        the interval keeps it: the line above says why it is slow."""
        loss.item()  # wait for the step
        alone = self.state.iter_num % self.cfg.training.log_interval == 0
        note = "the next line's speed includes it" if alone else "not counted in the first interval's speed"
        self.log(f"iter {self.state.iter_num}: {time.time() - interval_start:.1f} s including torch.compile ({note})")
        return (interval_start, interval_iters) if alone else (time.time(), 0)

    def learning_rate(self):
        return self.schedule(self.state.iter_num)

    @functools.cached_property
    def schedule(self):
        """iteration -> learning rate: --lr-schedule (gpt2/run/schedule.py), built once."""
        return build_schedule(self.cfg.training, self.cfg.optimizer.learning_rate)

    def fit(self, stop=None):
        """Train until --max-iters, --max-time or a stop signal (`stop`:
        StopSignals).  Returns (the last eval's losses, the signal the run
        stopped on or None)."""
        training, state = self.cfg.training, self.state
        session_start = time.time()
        base_time = state.training_time
        done = state.iter_num >= training.max_iters
        stopped_by = None
        # The untrained model's loss (about ln(50304) = 10.8), or, resuming a
        # finished run, the final losses again.
        losses = self.evaluate() if state.iter_num == 0 or done else None
        interval_start, interval_iters = time.time(), 0
        compiling = self.precision.compile  # the session's first step builds the training graph
        while not done:
            lr = self.learning_rate()
            loss = self.train_step(lr)
            state.iter_num += 1
            interval_iters += 1
            state.training_time = base_time + time.time() - session_start
            if compiling:  # its compile time is not a step's: said apart, left out of the interval's speed
                compiling = False
                interval_start, interval_iters = self.exclude_compile_step(loss, interval_start, interval_iters)
            if state.iter_num % training.log_interval == 0:
                # The whole batch's mean over the ranks (a collective: every
                # rank is here at the same step); host-device syncs happen
                # only here, once per log interval.
                loss_value = (self.dist.all_reduce_sum(loss.clone()) / self.dist.world_size).item()
                self.check_finite([loss_value], "the training loss")
                if self.dist.is_main:
                    self.report_progress(loss_value, lr, (time.time() - interval_start) / interval_iters)
                interval_start, interval_iters = time.time(), 0
            reason = None if state.iter_num >= training.max_iters else self.stop_reason(stop)
            done = reason is not None or state.iter_num >= training.max_iters
            if reason not in (None, "time"):
                stopped_by = reason
            if stopped_by and state.iter_num % training.eval_interval:
                # No evaluation: the resumed run goes on as if never stopped.
                self.save_between_evals(loss, f"written on {signal_name(stopped_by)}")
            elif done or state.iter_num % training.eval_interval == 0:
                losses = self.evaluate()
                interval_start, interval_iters = time.time(), 0
            elif self.step_checkpoint_due():
                self.save_between_evals(loss, "step checkpoint")
        state.training_time = base_time + time.time() - session_start
        return losses, stopped_by

    # ------------------------------------------------------------------
    # The end of a run

    def final_metrics(self, losses):
        state = self.state
        tokens_seen = state.iter_num * self.tokens_per_iter
        losses = losses or {}
        return {
            "best_val_loss": state.best_val_loss if math.isfinite(state.best_val_loss) else None,
            "final_train_loss": losses.get("train"),
            "final_val_loss": losses.get("val"),
            "total_training_time": state.training_time,
            "tokens_seen": tokens_seen,
            "tokens_per_sec": tokens_seen / state.training_time if state.training_time > 0 else 0.0,
            "sparsity": sparsity(self.raw_model),
            "peak_memory_gb": self.health.peak_memory_gb,
            "iterations": state.iter_num,
        }

    def report_final(self, losses):
        """Rank 0's end of a run: final metrics to the trackers and the
        console (the caller writes --json-output)."""
        metrics = self.final_metrics(losses)
        self.trackers.summary(metrics)
        done = (
            f"{self.state.iter_num} iters in {self.state.training_time:.1f} s | "
            f"best val {metrics['best_val_loss']:.4f} | {metrics['tokens_per_sec']:,.0f} tok/s"
            f" | peak memory {metrics['peak_memory_gb']:.2f} GB" + self.cpu.note(" | ")
        )
        self.log(f"done: {done}")
        self.trackers.alert("run finished", done, "INFO")
        return metrics
