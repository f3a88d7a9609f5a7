"""Where a checkpoint comes from: a file, or a tracker artifact
(LOG_CHECKPOINTS, lib/trackers/artifacts.py) named by a reference
such as wandb:entity/project/checkpoints-R:best or trackio:P/checkpoints-R:latest.
--resume-from, `make sample`, `make eval`, `make export` (--ckpt) and
`make reproduce` take either.
"""

from pathlib import Path

from gpt2.errors import UsageError
from gpt2.run.checkpoint import BEST, load_chosen_checkpoint
from lib.trackers.artifacts import ArtifactError, is_artifact_reference, resolve_artifact


def checkpoint_path(reference, flag="--ckpt"):
    """The local file of `reference`: the path itself, or the checkpoint
    file of the artifact it names (downloaded or found in the offline
    store).  An artifact that names nothing: one UsageError."""
    if not is_artifact_reference(str(reference)):
        return reference
    try:
        return resolve_artifact(str(reference))
    except ArtifactError as error:
        raise UsageError(f"{flag} {reference}: {error}") from None


def chosen_checkpoint(ckpt, out_dir):
    """The checkpoint file a tool's --ckpt names (make sample, eval,
    export): the file or artifact given, else OUT_DIR's best.pt."""
    return checkpoint_path(ckpt or str(Path(out_dir) / BEST))


def resolve_resume_from(reference, log):
    """The Checkpoint --resume-from names (a file or an artifact)."""
    path = checkpoint_path(reference, "--resume-from")
    if str(path) != str(reference):
        log(f"--resume-from {reference}: {path}")
    return load_chosen_checkpoint(path)
