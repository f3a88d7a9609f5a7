"""Typed configs: what a run reads instead of the argparse namespace.

One small frozen dataclass per part, its fields named after the part's
train.py flags (which lib/options.py derives from Kconfig), validated at
construction with messages that name the flags:

  ModelConfig     gpt2/Kconfig "Model"        -> GPTConfig (gpt2/model/gpt.py)
  DataConfig      gpt2/Kconfig "Dataset"      -> gpt2/data/prepare.py
  TrainingConfig  gpt2/Kconfig "Training"     -> gpt2/train.py's loop
  SystemConfig    gpt2/Kconfig "System"       -> device, precision, the CPU path
  SamplingConfig  gpt2/Kconfig "Sampling"     -> gpt2/run/samples.py
  HealthConfig    gpt2/Kconfig "Run health"   -> gpt2/run/health.py
  OptimizerConfig lib/optim/Kconfig           -> lib/optim/ (+ the optimizer's own Config)
  PruningConfig   lib/pruning/Kconfig         -> lib/pruning/
  TrackingConfig  Kconfig.tracking, lib/trackers/Kconfig -> lib/trackers/

RunConfig holds them all, built once from the parsed flags
(`RunConfig.from_flags(vars(args))`); tests/test_options.py checks that every
field is a flag and every flag is a field, so an option that reaches no code
(or code reading an option that does not exist) fails a test.
"""

import os
from dataclasses import dataclass

import torch

from gpt2.data.sources import DATASETS
from gpt2.data.tokenizer import N_VOCAB
from gpt2.errors import UsageError
from gpt2.eval.config import EvalConfig
from gpt2.model.gpt import GPT2_CONTEXT, MODEL_SIZES, GPTConfig
from lib.optim import OptimizerConfig, optimizer_config_class
from lib.plugins import PluginConfig, from_flags
from lib.pruning import PruningConfig
from lib.trackers import TrackerError, TrackingConfig

CUSTOM = "custom"


def _user_error(build, *args):
    """build(*args), with lib/'s ValueError / TrackerError as a UsageError."""
    try:
        return build(*args)
    except (ValueError, TrackerError) as err:
        raise UsageError(str(err)) from None


@dataclass(frozen=True)
class ModelConfig:
    """--model (a published size, or custom for --n-layer/--n-head/--n-embd),
    --block-size, --dropout, --bias, and --init-from: the weights to start
    from (gpt2/model/pretrained.py; empty: random)."""

    model: str
    n_layer: int
    n_head: int
    n_embd: int
    block_size: int
    dropout: float
    bias: bool
    init_from: str
    activation_checkpointing: bool

    def __post_init__(self):
        if self.model != CUSTOM and self.model not in MODEL_SIZES:
            raise UsageError(f"--model {self.model}: unknown model; choose one of {', '.join([*MODEL_SIZES, CUSTOM])}")
        if self.model != CUSTOM and self.block_size > GPT2_CONTEXT:
            raise UsageError(
                f"--model {self.model}: --block-size {self.block_size} exceeds GPT-2's context of "
                f"{GPT2_CONTEXT} tokens; use --block-size {GPT2_CONTEXT} or less, or --model custom"
            )
        n_embd, n_head = self.shape()["n_embd"], self.shape()["n_head"]
        if n_embd % n_head:
            raise UsageError(
                f"--model {self.model}: --n-embd {n_embd} must be divisible by --n-head {n_head}: "
                "each head gets n_embd / n_head channels"
            )

    def shape(self):
        """Layers, heads and width: the published size's, or the flags' for custom."""
        if self.model == CUSTOM:
            return dict(n_layer=self.n_layer, n_head=self.n_head, n_embd=self.n_embd)
        return MODEL_SIZES[self.model]

    def gpt_config(self):
        """The network's shape for gpt2/model/gpt.py."""
        try:
            # Pretrained weights keep GPT-2's 50,257 rows (gpt2/model/hf_format.py).
            vocab = {"vocab_size": N_VOCAB} if self.init_from else {}
            return GPTConfig(block_size=self.block_size, dropout=self.dropout, bias=self.bias, **vocab,
                             activation_checkpointing=self.activation_checkpointing, **self.shape())
        except ValueError as err:
            raise UsageError(f"--model {self.model}: {err}") from None


@dataclass(frozen=True)
class DataConfig:
    """--dataset, read from --data-input or downloaded into --data-dir."""

    dataset: str
    data_dir: str
    data_input: str
    data_max_tokens: int

    def __post_init__(self):
        if self.dataset not in DATASETS:
            raise UsageError(f"--dataset {self.dataset}: unknown dataset; choose one of {', '.join(DATASETS)}")
        if os.path.isfile(self.data_dir):
            raise UsageError(f"--data-dir {self.data_dir} is a file; give a folder (it is created if missing)")


@dataclass(frozen=True)
class TrainingConfig:
    """The loop: batch, schedule, evaluation, checkpoints and outputs."""

    batch_size: int
    batch_size_auto: bool
    gradient_accumulation_steps: int
    total_batch_tokens: int  # 0: from gradient_accumulation_steps (gpt2/run/batch_size.py)
    max_iters: int
    max_time: int
    min_lr: float
    warmup_iters: int
    lr_decay_iters: int
    lr_schedule: str
    lr_decay_fraction: float
    lr_decay_shape: str
    grad_clip: float
    eval_interval: int
    eval_iters: int
    log_interval: int
    seed: int
    out_dir: str
    resume: bool
    resume_from: str  # a checkpoint file or tracker artifact; empty: none
    ckpt_interval: int  # also a step checkpoint every N iterations; 0: none
    ckpt_keep: int  # step checkpoints kept
    json_output: str
    # The schedule's peak is LEARNING_RATE, OptimizerConfig's (lib/optim,
    # where it is validated); RunConfig checks MIN_LR against it.

    def __post_init__(self):
        # Found before training rather than when the JSON is written at the end.
        if self.json_output and os.path.isdir(self.json_output):
            raise UsageError(f"--json-output {self.json_output} is a folder; give a file path such as out/metrics.json")
        if os.path.exists(self.out_dir) and not os.path.isdir(self.out_dir):
            raise UsageError(f"--out-dir {self.out_dir} is a file; give a folder (it is created if missing)")

    @property
    def decay_iters(self):
        """Where the cosine decay ends: --lr-decay-iters, 0 meaning --max-iters."""
        return self.lr_decay_iters or self.max_iters


@dataclass(frozen=True)
class SystemConfig:
    """Where and how to compute: --device, --dtype, --compile, --cpu-matmul,
    --cpu-chunked-loss, --deterministic, and --dist-timeout for several
    processes."""

    device: str
    dtype: str
    compile: bool
    cpu_matmul: str
    cpu_chunked_loss: bool
    deterministic: bool
    dist_timeout: int

    def __post_init__(self):
        try:
            device_type = torch.device(self.device).type
        except RuntimeError:
            device_type = None
        if device_type not in ("cuda", "mps", "cpu"):
            raise UsageError(f"--device {self.device}: not a supported device; use cuda, cuda:N, mps or cpu")


@dataclass(frozen=True)
class SamplingConfig:
    """The samples logged during training (gpt2/run/samples.py); the
    prompt, temperature, top-k and seed are also `make sample`'s defaults."""

    sample_prompt: str
    sample_temperature: float
    sample_top_k: int
    sample_seed: int
    sample_interval: int
    sample_training_tokens: int

    def __post_init__(self):
        from gpt2.model.generate import FILE_PREFIX

        path = self.sample_prompt[len(FILE_PREFIX) :] if self.sample_prompt.startswith(FILE_PREFIX) else None
        if self.sample_interval and path is not None and not os.path.isfile(os.path.expanduser(path)):
            raise UsageError(f"--sample-prompt {self.sample_prompt}: no such file; give FILE:<an existing file> "
                             "or the prompt text itself")


@dataclass(frozen=True)
class HealthConfig:
    """Run health: update-to-weight ratios and the loss-spike alert (gpt2/run/health.py)."""

    health_interval: int
    loss_spike_factor: float

    def __post_init__(self):
        if 0 < self.loss_spike_factor <= 1:
            raise UsageError(
                f"--loss-spike-factor {self.loss_spike_factor:g}: every loss would be a spike; "
                "use a factor above 1 (e.g. 2.0), or 0 to turn the alert off"
            )


@dataclass(frozen=True)
class RunConfig:
    """Every part's config: what a training run is, apart from its state."""

    model: ModelConfig
    data: DataConfig
    training: TrainingConfig
    system: SystemConfig
    optimizer: OptimizerConfig
    optimizer_own: PluginConfig  # the Config of the selected optimizer's module (lib/optim/<name>.py)
    pruning: PruningConfig
    tracking: TrackingConfig
    sampling: SamplingConfig
    health: HealthConfig
    eval: EvalConfig

    def __post_init__(self):
        if self.training.min_lr > self.optimizer.learning_rate:
            raise UsageError(
                f"--min-lr {self.training.min_lr:g} is above --learning-rate {self.optimizer.learning_rate:g}; "
                "the schedule decays from the learning rate down to min-lr"
            )

    @classmethod
    def from_flags(cls, flags):
        """From train.py's parsed flags (a dict, e.g. vars(args))."""
        optimizer = _user_error(from_flags, OptimizerConfig, flags)
        own_class = _user_error(optimizer_config_class, optimizer.optimizer)
        return cls(
            model=from_flags(ModelConfig, flags),
            data=from_flags(DataConfig, flags),
            training=from_flags(TrainingConfig, flags),
            system=from_flags(SystemConfig, flags),
            optimizer=optimizer,
            optimizer_own=_user_error(from_flags, own_class, flags),
            pruning=_user_error(from_flags, PruningConfig, flags),
            tracking=_user_error(TrackingConfig.from_flags, flags),
            sampling=from_flags(SamplingConfig, flags),
            health=from_flags(HealthConfig, flags),
            eval=from_flags(EvalConfig, flags),
        )


def config_classes():
    """Every typed config class a flag can reach, for tests/test_options.py:
    the parts above, every optimizer's own Config and every tracker backend's."""
    from lib.optim import optimizer_names
    from lib.trackers import backend_names
    from lib.trackers.registry import backend_module

    return [ModelConfig, DataConfig, TrainingConfig, SystemConfig, OptimizerConfig, PruningConfig,
            TrackingConfig, SamplingConfig, HealthConfig, EvalConfig, *(optimizer_config_class(name) for name in optimizer_names()),
            *(backend_module(name).Config for name in backend_names())]
