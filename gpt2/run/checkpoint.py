"""The checkpoint format: the one module that names its keys, writes it,
reads it, validates it and says what does not fit.

A checkpoint is one torch file holding plain values and tensors:

    model, optimizer, pruner, scaler   the state_dict() of each stateful part
    iter_num, best_val_loss,           the TrainState (gpt2/run/state.py)
      training_time
    rng                                every rank's random generators (a list)
    model_config                       the GPTConfig as a dict: the model's shape
    args                               the run's resolved flags
    trackers                           the tracker runs to continue (lib/trackers)
    cpu_matmul                         the CPU path the run computed with (gpt2/cpu/)

The stateful parts register once with a Checkpointer; it alone saves them
and restores them.  Files are never half-written: each goes to a temporary
file in the same folder, flushed, fsynced and renamed over the real name
(lib/atomic.py), so a run killed at any moment leaves the previous
checkpoint intact (a kill mid-write may leave the temporary behind; the next
save removes it).  Loading uses weights_only: a checkpoint never runs code.

Step checkpoints (CKPT_INTERVAL, CKPT_KEEP): every N steps the latest is
also published as ckpt-NNNNNN.pt (a hard link: no second copy), and the
oldest beyond the last K are removed, only once the new one is complete.
--resume continues from the latest complete checkpoint of --out-dir
(ckpt.pt, or if it cannot be read the newest step checkpoint that can);
--resume-from a chosen file.
"""

import random
from pathlib import Path

import numpy as np
import torch

from gpt2.errors import UsageError
from gpt2.model.gpt import GPT, GPTConfig
from lib.atomic import atomic_open, publish_as, remove_stale_temporaries
from lib.errors import UserError, first_line

LATEST = "ckpt.pt"  # written at every evaluation (and every CKPT_INTERVAL steps)
BEST = "best.pt"  # the checkpoint with the lowest validation loss so far
STEP_PREFIX = "ckpt-"  # step checkpoints, CKPT_INTERVAL: ckpt-000100.pt after step 100

PARTS = ("model", "optimizer", "pruner", "scaler")
TRAIN_STATE = ("iter_num", "best_val_loss", "training_time")
# What a resume needs; a file without one of these is not a gpt2lab checkpoint.
REQUIRED_KEYS = (*PARTS, *TRAIN_STATE, "rng", "model_config", "args")
# What sampling, export and evaluation need: the model alone.
MODEL_KEYS = ("model", "model_config")

# What must equal the checkpoint's when resuming, because it decides the
# shape of the saved model.  (Dropout, learning rates, iteration counts may
# change; the options the optimizer and pruner state depend on are marked
# fixed_on_resume in their configs, lib/plugins.py.)
SHAPE_FIELDS = ("block_size", "vocab_size", "n_layer", "n_head", "n_embd", "bias")


class UnreadableCheckpoint(UserError):
    """A checkpoint file torch cannot load; str() is torch's reason, one line."""


class Checkpoint:
    """One checkpoint file, read and validated (tensors on the CPU)."""

    def __init__(self, path, state, flag="--resume"):
        self.path = Path(path)
        self._state = state
        self.flag = flag  # the flag that chose it, for the messages

    def __getitem__(self, key):
        """A key of the file as stored (for tools and tests that inspect one)."""
        return self._state[key]

    @property
    def model_config(self):
        return self._state["model_config"]

    @property
    def model_state(self):
        return self._state["model"]

    @property
    def args(self):
        return self._state.get("args", {})

    @property
    def iter_num(self):
        return self._state.get("iter_num")

    @property
    def training_time(self):
        return self._state.get("training_time")

    @property
    def best_val_loss(self):
        return self._state.get("best_val_loss")

    @property
    def train_state(self):
        return {key: self._state[key] for key in TRAIN_STATE}

    @property
    def rng(self):
        """Every rank's generator states, rank by rank."""
        return self._state["rng"]

    @property
    def trackers(self):
        """The tracker runs this checkpoint's run logs to (None if untracked)."""
        return self._state.get("trackers")

    @property
    def cpu_matmul(self):
        """The CPU path recorded by the run (gpt2/cpu/), or None."""
        return self._state.get("cpu_matmul")

    def check_compatible(self, model_config, settings):
        """Refuse to resume with a model shape (`model_config`: a dict of
        the configured GPTConfig) or a fixed_on_resume option (`settings`:
        the optimizer, the pruning method, AdamWPrune's score; lib/plugins.py)
        other than the checkpoint's: its state would not fit, or would mean
        another thing.  An option the checkpoint's run did not have yet is
        not compared."""
        saved = self._state["model_config"]
        changed = [f"{name} {saved[name]!r} -> {model_config[name]!r}" for name in SHAPE_FIELDS
                   if saved[name] != model_config[name]]
        changed += [f"--{name.replace('_', '-')} {self.args[name]!r} -> {value!r}" for name, value in settings.items()
                    if name in self.args and self.args[name] != value]
        if changed:
            raise UsageError(
                f"{self.flag}: the checkpoint was trained with other settings ("
                + ", ".join(changed)
                + "); resume with the original flags or start a new --out-dir"
            )


def read_checkpoint_file(path):
    """The raw state in `path` (tensors on the CPU).  Raises
    UnreadableCheckpoint with torch's reason."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, foreign or not a torch file: torch raises many kinds
        text = str(exc).strip()
        raise UnreadableCheckpoint(text.splitlines()[0] if text else type(exc).__name__) from None


def load(path, *, keys=REQUIRED_KEYS, who="", missing_hint, damaged_hint):
    """The Checkpoint at `path`, holding at least `keys`; else a UsageError
    starting with `who` (the flag that named the file), naming the file,
    what is wrong and (the hints) what to do."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{who}no checkpoint at {path}; {missing_hint}")
    try:
        state = read_checkpoint_file(path)
    except UnreadableCheckpoint as reason:
        raise UsageError(f"{who}cannot read {path} ({str(reason)[:200]}); {damaged_hint}") from None
    missing = [key for key in keys if not isinstance(state, dict) or key not in state]
    if missing:
        raise UsageError(f"{who}{path} is not a gpt2lab checkpoint (no {', '.join(missing)}); {damaged_hint}")
    return Checkpoint(path, state, flag=who.rstrip(": ") or "--resume")


def step_checkpoint_name(iter_num):
    return f"{STEP_PREFIX}{iter_num:06d}.pt"


def step_checkpoints(out_dir):
    """The step checkpoints in `out_dir`, oldest first."""
    found = []
    for path in Path(out_dir).glob(f"{STEP_PREFIX}*.pt"):
        number = path.name[len(STEP_PREFIX):-len(".pt")]
        if number.isdigit():
            found.append((int(number), path))
    return [path for _, path in sorted(found)]


def has_checkpoint(out_dir):
    """Whether --resume finds a checkpoint to continue from in `out_dir`."""
    return (Path(out_dir) / LATEST).is_file() or bool(step_checkpoints(out_dir))


def load_checkpoint(out_dir, log=None):
    """The checkpoint --resume continues from: the latest complete one in
    `out_dir`: ckpt.pt, or, when it is missing or cannot be read, the newest
    step checkpoint that can (a notice through `log` says so)."""
    hints = dict(who="--resume: ", damaged_hint="start a new --out-dir, or name a checkpoint with --resume-from",
                 missing_hint="start without --resume, or set --out-dir to the folder of the run to continue")
    candidates = [Path(out_dir) / LATEST, *reversed(step_checkpoints(out_dir))]
    candidates = [path for path in candidates if path.is_file()] or candidates[:1]
    first_error = None
    for path in candidates:
        try:
            checkpoint = load(path, **hints)
        except UsageError as error:
            first_error = first_error or error
            continue
        if first_error and log:
            log(f"notice: {first_error}; resuming from {path.name}, the newest complete checkpoint")
        return checkpoint
    raise first_error


def load_chosen_checkpoint(path):
    """The checkpoint --resume-from names."""
    return load(path, who="--resume-from: ", damaged_hint="give a checkpoint gpt2/train.py wrote",
                missing_hint="give a checkpoint file such as out/ckpt-000100.pt")


def load_model_checkpoint(path):
    """A checkpoint to read the model from (make sample, export, eval)."""
    return load(
        path,
        keys=MODEL_KEYS,
        missing_hint="train one with `make train`, or name one with --ckpt (CKPT=)",
        damaged_hint="it is damaged or not a torch file: train again, or give one gpt2/train.py wrote "
        "(out/best.pt or out/ckpt.pt) with --ckpt",
    )


def load_model(path):
    """(the GPT a checkpoint holds, in eval mode on the CPU; the Checkpoint),
    for the tools that read a model from a file: make sample, export, eval."""
    checkpoint = load_model_checkpoint(path)
    try:
        model = GPT(GPTConfig(**checkpoint.model_config))
        model.load_state_dict(checkpoint.model_state)
    except (TypeError, ValueError, RuntimeError) as exc:
        reason = first_line(exc)
        raise UsageError(f"{path}: its weights do not fit its model config ({reason[:200]}); "
                         "the checkpoint is damaged") from None
    return model.eval(), checkpoint


class Checkpointer:
    """Writes and restores a run's checkpoints in `out_dir`.  The stateful
    parts (objects with state_dict / load_state_dict) register once, by
    their key; `record()` returns the plain values saved beside them
    (model_config, args, trackers, cpu_matmul: read when saving, since the
    trackers' state changes during the run)."""

    def __init__(self, out_dir, parts, record, keep=0):
        unknown = set(parts) - set(PARTS)
        if unknown:
            raise ValueError(f"not a checkpoint part: {', '.join(sorted(unknown))}")
        self.out_dir = Path(out_dir)
        self.parts = parts
        self.record = record
        self.keep = keep  # step checkpoints kept (CKPT_KEEP)

    def state(self, train_state, rng):
        """Everything a checkpoint file holds, as one dict."""
        return {
            **{name: part.state_dict() for name, part in self.parts.items()},
            **{key: value for key, value in train_state.state_dict().items() if key in TRAIN_STATE},
            "rng": rng,  # one entry per rank
            **self.record(),
        }

    @property
    def latest(self):
        """The file the latest checkpoint is in."""
        return self.out_dir / LATEST

    def save(self, train_state, rng, is_best, step=False):
        """Write out_dir/ckpt.pt, and best.pt if `is_best`; `step`: also the
        step checkpoint ckpt-NNNNNN.pt, then remove the oldest beyond the
        last `keep`."""
        save_checkpoint(self.out_dir, self.state(train_state, rng), is_best)
        if step:
            publish_as(self.out_dir / LATEST, self.out_dir / step_checkpoint_name(train_state.iter_num))
            if self.keep > 0:
                for old in step_checkpoints(self.out_dir)[: -self.keep]:
                    old.unlink(missing_ok=True)

    def restore(self, checkpoint, train_state):
        """Load every registered part and the TrainState from `checkpoint`.
        A part saved empty (the gradient scaler of a run without float16)
        keeps its fresh state."""
        for name, part in self.parts.items():
            if checkpoint[name]:
                part.load_state_dict(checkpoint[name])
        train_state.load_state_dict(checkpoint.train_state)


def save_checkpoint(out_dir, state, is_best):
    """Write `state` to out_dir/ckpt.pt, and to out_dir/best.pt if `is_best`."""
    latest, best = Path(out_dir) / LATEST, Path(out_dir) / BEST
    for path in (latest, best):
        remove_stale_temporaries(path)  # a killed run's half checkpoints (GBs each)
    with atomic_open(latest) as f:
        torch.save(state, f)
    if is_best:
        # ckpt.pt is later replaced by a new file, so best.pt keeps these bytes.
        publish_as(latest, best)


def rng_state():
    """Every global random generator's state, in types torch.load accepts
    with weights_only=True (numpy's key array becomes a list)."""
    _, key, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"key": key.tolist(), "pos": pos, "has_gauss": has_gauss, "gauss": gauss},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state):
    """Restore what rng_state() captured."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy = state["numpy"]
    np.random.set_state(
        ("MT19937", np.array(numpy["key"], dtype=np.uint32), numpy["pos"], numpy["has_gauss"], numpy["gauss"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
