"""BATCH_SIZE_AUTO: the largest micro-batch a full training step fits in,
found on the GPU by trying it.

A trial is one real step at a size: forward, backward and optimizer step of
a fresh copy of the model (random weights, the run's optimizer, dtype and
compile setting) on random tokens.  A size fits when the trial runs and
its peak memory stays under MEMORY_MARGIN of the GPU's; a
torch.cuda.OutOfMemoryError, or a peak above that, means it does not.
Sizes double from 1 until one does not fit, then the gap is bisected.
Every rank probes its own GPU and all take the smallest answer (a
collective), so each process runs the same micro-batch.  The random
generators are left as they were: the probe draws nothing the run would.

On the CPU there is nothing to probe: BATCH_SIZE is used as it is (memory
there is the machine's, shared with everything else).
"""

import gc

import torch


MEMORY_MARGIN = 0.9  # a size fits when its step peaks below 90% of the GPU's memory
MAX_BATCH = 65536  # BATCH_SIZE's Kconfig range


class DoesNotFit(Exception):
    """A trial that ran but peaked above the margin."""


def largest_fitting(fits, upper=MAX_BATCH):
    """The largest size in [1, upper] for which fits(size) is true, assuming
    that a size fits when any larger one does; 0 when not even 1 fits.
    Tries 1, 2, 4, ... then bisects between the last fit and the first miss."""
    if upper < 1 or not fits(1):
        return 0
    good, bad = 1, None
    while bad is None:
        size = min(good * 2, upper)
        if size == good:
            return good
        if fits(size):
            good = size
        else:
            bad = size
    while bad - good > 1:
        middle = (good + bad) // 2
        if fits(middle):
            good = middle
        else:
            bad = middle
    return good


def fits_by_trial(trial):
    """fits(size) for largest_fitting: trial(size) runs one step, raising
    torch.cuda.OutOfMemoryError (or DoesNotFit) when the size does not fit;
    the memory of a failed trial is released before the next."""
    tried = {}

    def fits(size):
        try:
            trial(size)
            tried[size] = True
        except (torch.cuda.OutOfMemoryError, DoesNotFit):
            tried[size] = False
        gc.collect()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.empty_cache()
        return tried[size]

    fits.tried = tried
    return fits


def cuda_trial(cfg, precision, device):
    """trial(size): one full training step of a fresh model at `size`
    sequences on `device` (CUDA), checked against MEMORY_MARGIN."""
    from lib.optim import build_optimizer  # the run's optimizer, as gpt2/run/setup.py builds it
    from gpt2.model.gpt import GPT

    config = cfg.model.gpt_config()
    total = torch.cuda.get_device_properties(device).total_memory
    held = {}  # the probe's model, built once (and compiled once) for every size; close() frees it

    def trial(size):
        x = loss = None
        try:
            torch.cuda.reset_peak_memory_stats(device)
            if not held:
                model = GPT(config).to(device)
                held.update(model=model, optimizer=build_optimizer(model, cfg.optimizer, cfg.optimizer_own),
                            step_model=torch.compile(model) if precision.compile else model,
                            scaler=torch.amp.GradScaler("cuda", enabled=precision.dtype == "float16"))
            optimizer, scaler = held["optimizer"], held["scaler"]
            x = torch.randint(config.vocab_size, (size, config.block_size), device=device)
            for _ in range(2):  # the second step runs with the optimizer's state allocated
                with precision.autocast():
                    loss = held["step_model"](x, x)[1]
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
            torch.cuda.synchronize(device)
            peak = torch.cuda.max_memory_reserved(device)
            if peak > MEMORY_MARGIN * total:
                raise DoesNotFit(f"{size}: {peak / 2**30:.1f} GiB of {total / 2**30:.1f}")
        finally:
            del x, loss
            if held:
                held["optimizer"].zero_grad(set_to_none=True)  # an out-of-memory mid-backward leaves gradients

    trial.close = held.clear
    return trial


def memory_needed(config, dtype):
    """A rough estimate (bytes) of one step at micro-batch 1: weights,
    gradients and AdamW's two moments in float32 (16 bytes a parameter),
    plus the activations kept for backward (about 34 values per token and
    width, and 5 per head and token pair, per layer: Korthikanti et al.,
    2022) and the logits, at the autocast dtype's width."""
    width = 4 if dtype == "float32" else 2
    params = 12 * config.n_layer * config.n_embd**2 + (config.vocab_size + config.block_size) * config.n_embd
    tokens = config.block_size
    activations = config.n_layer * (34 * tokens * config.n_embd + 5 * config.n_head * tokens**2) * width / 2
    logits = 3 * tokens * config.vocab_size * 4
    return 16 * params + activations + logits


def auto_batch_size(cfg, precision, dist, device, log, upper=MAX_BATCH, trial=None):
    """The micro-batch of BATCH_SIZE_AUTO: (size, record), with size None
    when the configured BATCH_SIZE stays (auto off, or not on CUDA).
    `record` goes into the run's provenance.  `trial`: the step to try
    sizes with (tests inject one; default cuda_trial).  Every rank must
    call it (collectives); not even a size of 1 fitting on a rank stops
    every rank with one line."""
    training = cfg.training
    if not training.batch_size_auto:
        return None, None
    if trial is None and device.type != "cuda":
        log(f"notice: --batch-size-auto probes a GPU; on {device.type} --batch-size {training.batch_size} is used")
        return None, {"auto": True, "probed": False, "batch_size": training.batch_size}
    trial = trial or cuda_trial(cfg, precision, device)
    fits = fits_by_trial(trial)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        local = largest_fitting(fits, upper)
    getattr(trial, "close", lambda: None)()  # the probe's model and optimizer go before the run's are built
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    problem = None
    if local == 0:
        config = cfg.model.gpt_config()
        need = memory_needed(config, precision.dtype) / 2**30
        have = torch.cuda.get_device_properties(device).total_memory / 2**30 if device.type == "cuda" else 0.0
        problem = (
            f"--batch-size-auto: not even a micro-batch of 1 fits on {device} ({have:.1f} GiB; one step of this "
            f"model needs about {need:.1f} GiB); turn on --activation-checkpointing, lower --block-size or the "
            "model size, or use --dtype bfloat16"
        )
    dist.check_all(problem)
    sizes = dist.gather(local)
    size = min(sizes)
    ranks = f", the smallest of {dist.world_size} processes ({', '.join(map(str, sizes))})" if dist.enabled else ""
    log(f"batch size auto: {size} sequences per micro-batch (the largest that fits a full step with "
        f"{(1 - MEMORY_MARGIN) * 100:.0f}% memory to spare{ranks}; tried {sorted(fits.tried)})")
    return size, {"auto": True, "probed": True, "batch_size": size, "per_rank": sizes,
                  "margin": 1 - MEMORY_MARGIN, "device": str(device),
                  "tried": {str(k): v for k, v in sorted(fits.tried.items())}}
