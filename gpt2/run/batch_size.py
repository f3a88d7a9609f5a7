"""How many sequences each process puts through the model at once (the
micro-batch) and how many micro-batches it accumulates per optimizer step,
from what the user asks the optimizer to see.

TOTAL_BATCH_TOKENS is the batch of one optimizer step in tokens, over all
processes (llm.c's -d, torchtitan's tokens per step).  Each process gets
TOTAL_BATCH_TOKENS / (BLOCK_SIZE x processes) sequences per step; it
puts them through in micro-batches of BATCH_SIZE sequences, or of the
largest size below that divides them.  So one .config trains the same thing
on 1, 2 or 8 processes: the same sequences per step, every micro-batch of
one size, so the mean of the micro-batch losses is the mean over the whole
batch.  nanoGPT's GPT-2 124M: 491,520 tokens = 12 x 1024 x 40 on one GPU,
12 x 1024 x 5 on each of 8.

TOTAL_BATCH_TOKENS=0 keeps nanoGPT's GRADIENT_ACCUMULATION_STEPS, a total
over all processes: the step is BATCH_SIZE x BLOCK_SIZE x
GRADIENT_ACCUMULATION_STEPS tokens.  Where the processes do not divide the
accumulation steps (the tiny default's 1 on 2 processes), the same tokens
are shared out in smaller micro-batches by the rule above.

BATCH_SIZE_AUTO (CUDA): the micro-batch is found by trying full training
steps (gpt2/run/batch_probe.py); BATCH_SIZE is then an upper bound that
probe replaces.
"""

from dataclasses import dataclass

from gpt2.errors import UsageError


@dataclass(frozen=True)
class BatchPlan:
    """One process's share of an optimizer step."""

    batch_size: int  # sequences per forward/backward on each process
    micro_steps: int  # micro-batches each process accumulates per step
    block_size: int
    world_size: int

    @property
    def tokens_per_iter(self):
        """Tokens per optimizer step, over all processes."""
        return self.batch_size * self.block_size * self.micro_steps * self.world_size

    @property
    def sequences_per_rank(self):
        return self.batch_size * self.micro_steps

    def describe(self):
        """'491,520 tokens/iter = 12 batch x 1024 block x 40 accumulation (5 per process x 8 processes)'."""
        line = (f"{self.tokens_per_iter:,} tokens/iter = {self.batch_size} batch x {self.block_size} block x "
                f"{self.micro_steps * self.world_size} accumulation")
        if self.world_size > 1:
            line += f" ({self.micro_steps} per process x {self.world_size} processes)"
        return line


def largest_divisor_at_most(number, bound):
    """The largest divisor of `number` that is at most `bound` (at least 1)."""
    return max(d for d in range(1, min(number, bound) + 1) if number % d == 0)


def nearest_multiples(value, unit):
    """The multiples of `unit` just below and above `value` (no 0)."""
    below = value // unit * unit
    return [m for m in (below, below + unit) if m > 0]


def plan_batch(training, block_size, world_size, batch_size=None):
    """The BatchPlan of `training` (its total_batch_tokens,
    gradient_accumulation_steps and batch_size, or `batch_size`: the probed
    micro-batch of BATCH_SIZE_AUTO) on `world_size` processes.  A total that
    does not split into whole sequences on every process: one UsageError
    naming the nearest totals that do."""
    limit = batch_size or training.batch_size
    per_step = block_size * world_size  # one sequence on each process
    if training.total_batch_tokens:
        if training.gradient_accumulation_steps != 1:  # it would be ignored: say so
            raise UsageError(
                f"--gradient-accumulation-steps {training.gradient_accumulation_steps} has no effect while "
                f"--total-batch-tokens {training.total_batch_tokens:,} sets the step (the accumulation is derived "
                "from it); give one of them: --total-batch-tokens 0 to count accumulation steps"
            )
        total, flag = training.total_batch_tokens, "--total-batch-tokens"
    else:
        steps = training.gradient_accumulation_steps
        if steps % world_size == 0:  # nanoGPT's rule: the accumulation steps shared out, micro-batches kept
            return BatchPlan(limit, steps // world_size, block_size, world_size)
        total, flag = limit * block_size * steps, "--gradient-accumulation-steps"
    if total % per_step:
        options = " or ".join(f"{m:,}" for m in nearest_multiples(total, per_step))
        if flag == "--total-batch-tokens":
            raise UsageError(
                f"--total-batch-tokens {total:,} does not split into whole {block_size}-token sequences on "
                f"{world_size} process{'es' if world_size > 1 else ''}; use {options} "
                f"(a multiple of {block_size} block x {world_size}; multiples of "
                f"{limit * per_step:,} keep micro-batches of {limit})"
            )
        raise UsageError(
            f"--gradient-accumulation-steps {training.gradient_accumulation_steps}: its {total:,} tokens per step "
            f"({limit} batch x {block_size} block x {training.gradient_accumulation_steps}) do not split into whole "
            f"sequences on {world_size} processes; use a multiple of {world_size}, or --total-batch-tokens {options}"
        )
    sequences = total // per_step
    micro_batch = largest_divisor_at_most(sequences, limit)
    return BatchPlan(micro_batch, sequences // micro_batch, block_size, world_size)


def recorded_tokens_per_iter(flags):
    """Tokens per optimizer step of a finished run, from its recorded flags
    (a checkpoint's args, a journal's config): TOTAL_BATCH_TOKENS when set,
    else BATCH_SIZE x BLOCK_SIZE x GRADIENT_ACCUMULATION_STEPS; None when
    the flags lack them.  (A BATCH_SIZE_AUTO run's probed micro-batch is not
    in its flags; with a total, as the presets have, it does not matter.)"""
    total = flags.get("total_batch_tokens")
    if isinstance(total, int) and total > 0:
        return total
    sizes = [flags.get(k) for k in ("batch_size", "block_size", "gradient_accumulation_steps")]
    return sizes[0] * sizes[1] * sizes[2] if all(isinstance(n, int) for n in sizes) else None
