"""Checkpoints as tracker artifacts (TRACKER_LOG_CHECKPOINTS)."""

PREFIXES = ("wandb:", "trackio:")


class ArtifactError(Exception):
    """An artifact reference that names nothing; str() is one line."""


def is_artifact_reference(text):
    return str(text).startswith(PREFIXES)


def resolve_artifact(reference):
    raise ArtifactError("artifacts are not supported yet")
