"""Checkpoints that are never half-written, and the random-number state that
lets a resumed run repeat an uninterrupted one exactly.

Every file is written to a temporary file in the same folder, flushed, fsynced
and then renamed over the real name (lib/atomic.py): a run killed at any
moment leaves the previous checkpoint intact.  (A kill in the middle of a
write may leave the temporary behind; the next save removes it.)
"""

import random
from pathlib import Path

import numpy as np
import torch

from gpt2.errors import UsageError
from lib.atomic import atomic_open, publish_as, remove_stale_temporaries
from lib.errors import UserError

LATEST = "ckpt.pt"  # written at every evaluation
BEST = "best.pt"  # the checkpoint with the lowest validation loss so far


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


# What a resume reads from a checkpoint (gpt2/train.py checkpoint_state
# writes these and more).
REQUIRED_KEYS = ("model", "model_config", "optimizer", "pruner", "scaler", "iter_num", "best_val_loss",
                 "training_time", "rng", "args")  # fmt: skip


class UnreadableCheckpoint(UserError):
    """A checkpoint file torch cannot load; str() is torch's reason, one line."""


def read_checkpoint_file(path):
    """The state in `path` (tensors on the CPU).  weights_only: a checkpoint
    holds only tensors and plain Python values, so loading one never runs
    code from the file.  Raises UnreadableCheckpoint."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, foreign or not a torch file: torch raises many kinds
        text = str(exc).strip()
        raise UnreadableCheckpoint(text.splitlines()[0] if text else type(exc).__name__) from None


def load_checkpoint(out_dir):
    """The state saved in out_dir/ckpt.pt (tensors on the CPU)."""
    path = Path(out_dir) / LATEST
    if not path.is_file():
        raise UsageError(
            f"--resume: no checkpoint at {path}; start without --resume, "
            "or set --out-dir to the folder of the run to continue"
        )
    try:
        state = read_checkpoint_file(path)
    except UnreadableCheckpoint as reason:
        raise UsageError(f"--resume: cannot read {path} ({reason}); start a new --out-dir") from None
    missing = [key for key in REQUIRED_KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        raise UsageError(
            f"--resume: {path} is not a gpt2lab checkpoint (no {', '.join(missing)}); start a new --out-dir"
        )
    return state


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
