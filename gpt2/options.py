"""The one map between Kconfig symbols and the command line of gpt2/train.py.

Kconfig holds each option's type, prompt, help, default and int range; this file
says only where each value goes.  scripts/genconfig.py turns `.config` into
train.py arguments through TRAIN_FLAGS, gpt2/cli.py builds train.py's parser
from the same table (defaults and help come from Kconfig), and
tests/test_options.py fails when a visible Kconfig option reaches nothing or a
mapped flag is missing from the parser.

Choices are mapped through a hidden string symbol whose defaults name the
selected entry (the Linux idiom), e.g. choice DATASET_* feeds string DATASET.
"""

# Kconfig symbol -> train.py flag.  The argparse dest is the flag without its
# leading dashes, with '-' turned into '_' (--max-iters -> args.max_iters).
TRAIN_FLAGS = {
    # Model
    "MODEL": "--model",
    "N_LAYER": "--n-layer",
    "N_HEAD": "--n-head",
    "N_EMBD": "--n-embd",
    "BLOCK_SIZE": "--block-size",
    "DROPOUT": "--dropout",
    "BIAS": "--bias",
    # Data
    "DATASET": "--dataset",
    "DATA_DIR": "--data-dir",
    "DATA_INPUT": "--data-input",
    "DATA_MAX_TOKENS": "--data-max-tokens",
    # Training
    "BATCH_SIZE": "--batch-size",
    "GRADIENT_ACCUMULATION_STEPS": "--gradient-accumulation-steps",
    "MAX_ITERS": "--max-iters",
    "MAX_TIME": "--max-time",
    "LEARNING_RATE": "--learning-rate",
    "MIN_LR": "--min-lr",
    "WARMUP_ITERS": "--warmup-iters",
    "LR_DECAY_ITERS": "--lr-decay-iters",
    "GRAD_CLIP": "--grad-clip",
    "EVAL_INTERVAL": "--eval-interval",
    "EVAL_ITERS": "--eval-iters",
    "LOG_INTERVAL": "--log-interval",
    "SEED": "--seed",
    "OUT_DIR": "--out-dir",
    "RESUME": "--resume",
    "JSON_OUTPUT": "--json-output",
    # Optimizer
    "OPTIMIZER": "--optimizer",
    "WEIGHT_DECAY": "--weight-decay",
    "BETA1": "--beta1",
    "BETA2": "--beta2",
    "SGD_MOMENTUM": "--momentum",
    "SPAM_INTERVAL": "--spam-interval",
    "SPAM_WARMUP": "--spam-warmup",
    "SPAM_THETA": "--spam-theta",
    # Pruning
    "PRUNING_METHOD": "--pruning-method",
    "TARGET_SPARSITY": "--target-sparsity",
    "PRUNING_WARMUP": "--pruning-warmup",
    "PRUNING_RAMP_ITERS": "--pruning-ramp-iters",
    "PRUNING_INTERVAL": "--pruning-interval",
    # System
    "DEVICE": "--device",
    "DTYPE": "--dtype",
    "COMPILE": "--compile",
    "CPU_MATMUL": "--cpu-matmul",
    # Experiment tracking
    "TRACKER": "--tracker",
    "TRACKER_PROJECT": "--tracker-project",
    "TRACKER_RUN_NAME": "--tracker-run-name",
    "WANDB_ENTITY": "--wandb-entity",
    "WANDB_OFFLINE": "--wandb-offline",
    "TRACKIO_DIR": "--trackio-dir",
}

# Options read by scripts/ rather than train.py: how many processes torchrun
# starts, and the port of the Trackio dashboard.
LAUNCH_OPTIONS = {
    "NPROC_PER_NODE",
    "NNODES",
    "RDZV_ENDPOINT",
    "TRACKIO_PORT",
}

# Kconfig has no float type: these string symbols hold floats, parsed and
# checked once (lib/kconfig.py) against (low, high, low_inclusive, high_inclusive).
FLOATS = {
    "DROPOUT": (0.0, 1.0, True, False),
    "LEARNING_RATE": (0.0, 10.0, False, True),
    "MIN_LR": (0.0, 10.0, True, True),
    "GRAD_CLIP": (0.0, 1e6, True, True),
    "WEIGHT_DECAY": (0.0, 10.0, True, True),
    "BETA1": (0.0, 1.0, True, False),
    "BETA2": (0.0, 1.0, True, False),
    "SGD_MOMENTUM": (0.0, 1.0, True, False),
    "SPAM_THETA": (0.0, 1e12, False, True),
    "TARGET_SPARSITY": (0.0, 1.0, True, False),
}


def dest(flag):
    """argparse destination of a flag: '--max-iters' -> 'max_iters'."""
    return flag.lstrip("-").replace("-", "_")
