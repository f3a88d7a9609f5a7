"""From parsed flags to what the loop runs with: device, precision, model shape.

Every check of a flag *combination* lives here (single values are already
range-checked by gpt2/cli.py), each raising UsageError with a message that
names the flags involved and how to fix them.
"""

import os
from contextlib import nullcontext
from dataclasses import asdict, dataclass

import torch

from gpt2.errors import UsageError
from gpt2.model import GPT2_CONTEXT, MODEL_SIZES, GPTConfig

CPU_FALLBACK_NOTICE = (
    "notice: CUDA is not available; running on CPU in float32 without torch.compile "
    "(set DEVICE=cpu / --device cpu to silence)"
)

# What must equal the checkpoint's when resuming, because it decides the
# shape of the saved model, optimizer and pruner state.  (Dropout, learning
# rates, iteration counts may change.)
SHAPE_FIELDS = ("block_size", "vocab_size", "n_layer", "n_head", "n_embd", "bias")
STATE_FLAGS = ("optimizer", "pruning_method")


@dataclass(frozen=True)
class Precision:
    """Device type, autocast dtype and compilation actually used."""

    device_type: str
    dtype: str
    compile: bool

    @property
    def torch_dtype(self):
        return getattr(torch, self.dtype)

    def autocast(self):
        """Mixed-precision context for forward passes (none in float32)."""
        if self.dtype == "float32":
            return nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.torch_dtype)


def resolve_precision(args, log=print):
    """Where and how to run.  Asking for CUDA on a machine without it falls
    back to the only safe CPU setting (float32, no compile) with one notice;
    an explicit --device cpu keeps --dtype and --compile as given."""
    try:
        device_type = torch.device(args.device).type
    except RuntimeError:
        device_type = None
    if device_type not in ("cuda", "mps", "cpu"):
        raise UsageError(f"--device {args.device}: not a supported device; use cuda, cuda:N, mps or cpu")
    dtype, compile_model = args.dtype, args.compile
    if device_type == "cuda" and not torch.cuda.is_available():
        log(CPU_FALLBACK_NOTICE)
        device_type, dtype, compile_model = "cpu", "float32", False
    if device_type == "mps" and not torch.backends.mps.is_available():
        raise UsageError("--device mps: this machine has no Apple GPU (MPS); use --device cpu")
    if device_type == "cuda" and dtype == "bfloat16" and not torch.cuda.is_bf16_supported():
        raise UsageError(
            f"--dtype bfloat16: {torch.cuda.get_device_name()} has no bfloat16 support; use --dtype float16"
        )
    return Precision(device_type=device_type, dtype=dtype, compile=compile_model)


def check_flags(args):
    """Combinations of flags that cannot work together."""
    if args.min_lr > args.learning_rate:
        raise UsageError(
            f"--min-lr {args.min_lr:g} is above --learning-rate {args.learning_rate:g}; "
            "the schedule decays from the learning rate down to min-lr"
        )
    # Found before training rather than when the JSON is written at the end.
    if args.json_output and os.path.isdir(args.json_output):
        raise UsageError(f"--json-output {args.json_output} is a folder; give a file path such as out/metrics.json")
    if os.path.exists(args.out_dir) and not os.path.isdir(args.out_dir):
        raise UsageError(f"--out-dir {args.out_dir} is a file; give a folder (it is created if missing)")


def model_config(args):
    """GPTConfig from --model (a published size, or "custom" for --n-layer /
    --n-head / --n-embd) and --block-size / --dropout / --bias."""
    if args.model == "custom":
        shape = dict(n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd)
    elif args.model in MODEL_SIZES:
        shape = MODEL_SIZES[args.model]
        if args.block_size > GPT2_CONTEXT:
            raise UsageError(
                f"--model {args.model}: --block-size {args.block_size} exceeds GPT-2's context of "
                f"{GPT2_CONTEXT} tokens; use --block-size {GPT2_CONTEXT} or less, or --model custom"
            )
    else:
        known = ", ".join([*MODEL_SIZES, "custom"])
        raise UsageError(f"--model {args.model}: unknown model; choose one of {known}")
    try:
        return GPTConfig(block_size=args.block_size, dropout=args.dropout, bias=args.bias, **shape)
    except ValueError as e:
        raise UsageError(f"--model {args.model}: {e}") from None


def check_resume_compatible(args, config, checkpoint):
    """Refuse to resume with a model shape, optimizer or pruning method other
    than the checkpoint's: its state would not fit."""
    saved_config, saved_args = checkpoint["model_config"], checkpoint["args"]
    changed = [f"{name} {saved_config[name]!r} -> {getattr(config, name)!r}" for name in SHAPE_FIELDS
               if saved_config[name] != getattr(config, name)]
    changed += [f"--{name.replace('_', '-')} {saved_args[name]!r} -> {getattr(args, name)!r}" for name in STATE_FLAGS
                if saved_args[name] != getattr(args, name)]
    if changed:
        raise UsageError(
            "--resume: the checkpoint was trained with other settings ("
            + ", ".join(changed)
            + "); resume with the original flags or start a new --out-dir"
        )


def model_config_dict(config):
    """Plain dict of a GPTConfig, for the checkpoint."""
    return asdict(config)
