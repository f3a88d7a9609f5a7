"""Checkpoints as tracker artifacts (LOG_CHECKPOINTS).

Each checkpoint a run writes is logged to every tracker as a new version of
one artifact of the run, checkpoint-<run name> (type "model", holding
ckpt.pt), through the backend's own API: W&B's run.log_artifact(...,
aliases=[...]) and Trackio's run.log_artifact(path, name, type, aliases).
Its aliases: `latest` on every version, `best` on the versions that were
the best so far (both backends move an alias onto its newest version).

A reference names one version, for --resume-from, `make sample` (CKPT=),
`make reproduce` and eval:

    wandb:<entity>/<project>/checkpoint-<run>:<alias or vN>   (entity optional)
    trackio:<project>/checkpoint-<run>:<alias or vN>

resolve_artifact() returns the local checkpoint file a reference names: W&B
offline runs are read from their .wandb files under WANDB_DIR (the files the
artifact staged stay on disk until `wandb sync`), else from the server
(wandb.Api().artifact(...).download()); Trackio's from its project database
and content-addressed store (TRACKIO_DIR), downloaded next to it.
"""

import base64
import hashlib
import os
from pathlib import Path

from lib.errors import first_line

PREFIXES = ("wandb:", "trackio:")
TYPE = "model"
FILE = "ckpt.pt"  # the file inside each version


class ArtifactError(Exception):
    """An artifact reference that names nothing; str() is one line."""


def artifact_name(run_name):
    """checkpoint-<run name>, in the characters both backends accept."""
    return "checkpoint-" + "".join(c if c.isalnum() or c in "-_." else "-" for c in run_name)


def is_artifact_reference(text):
    return str(text).startswith(PREFIXES)


def split_reference(reference):
    """('wandb' | 'trackio', [path parts], name, alias)."""
    backend, _, rest = reference.partition(":")
    path, _, alias = rest.rpartition(":")
    if not path:
        path, alias = rest, "latest"
    parts = path.split("/")
    if not alias or not all(parts) or len(parts) < 2:
        raise ArtifactError(f"not an artifact reference; write {backend}:<project>/<name>:<alias>")
    return backend, parts[:-1], parts[-1], alias


def resolve_artifact(reference):
    """The local checkpoint file `reference` names.  Raises ArtifactError."""
    backend, where, name, alias = split_reference(reference)
    if backend == "wandb":
        if len(where) > 2:
            raise ArtifactError("not an artifact reference; write wandb:<entity>/<project>/<name>:<alias>")
        return wandb_artifact_file(where[-1], where[0] if len(where) == 2 else "", name, alias)
    if len(where) != 1:
        raise ArtifactError("not an artifact reference; write trackio:<project>/<name>:<alias>")
    return trackio_artifact_file(where[0], name, alias)


# ----------------------------------------------------------------------
# W&B


def offline_artifacts(wandb_dir, project, name):
    """[(aliases, {path: (local_path, md5 base64)})] of every version of
    artifact `name` logged by the offline runs of `project` under
    `wandb_dir`, oldest first."""
    from lib.trackers.wandb_records import offline_run_folders, read_offline_run

    found = []
    for folder in offline_run_folders(wandb_dir):
        for run_file in sorted(Path(folder).glob("run-*.wandb")):
            try:  # the run record comes first: another project's run is not read further
                if read_offline_run(run_file, header_only=True).project != project:
                    continue
                records = read_offline_run(run_file).artifacts
            except ValueError as error:  # a damaged .wandb file: one line naming it
                raise ArtifactError(str(error)) from None
            found += [(list(a.aliases), {c.path: (c.local_path, c.digest) for c in a.manifest.contents})
                      for a in records if a.name == name]
    return found


def md5_base64(path):
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return base64.b64encode(digest.digest()).decode()


def wandb_artifact_file(project, entity, name, alias):
    wandb_dir = Path(os.environ.get("WANDB_DIR") or ".") / "wandb"
    versions = offline_artifacts(wandb_dir, project, name) if wandb_dir.is_dir() else []
    if versions:
        chosen = [contents for aliases, contents in versions if alias in aliases or alias == "latest"]
        if alias.startswith("v") and alias[1:].isdigit() and int(alias[1:]) < len(versions):
            chosen = [versions[int(alias[1:])][1]]
        if not chosen:
            raise ArtifactError(f"no version of {name} in W&B project {project} ({wandb_dir}) has alias {alias}")
        local_path, digest = chosen[-1].get(FILE, (None, None))
        if not local_path or not Path(local_path).is_file() or md5_base64(local_path) != digest:
            raise ArtifactError(f"the file of {name}:{alias} is no longer in W&B's staging folder ({local_path}); "
                                "it was synced or removed: resolve it online")
        return Path(local_path)
    if os.environ.get("WANDB_MODE") in ("offline", "disabled"):
        raise ArtifactError(f"no artifact {name} in the offline W&B runs of project {project} under {wandb_dir}")
    try:
        import wandb

        api = wandb.Api()
        path = "/".join(p for p in (entity, project, f"{name}:{alias}") if p)
        folder = api.artifact(path, type=TYPE).download()
    except Exception as exc:  # no server, no key, not found: wandb raises many kinds
        text = first_line(exc)
        raise ArtifactError(f"no such W&B artifact offline under {wandb_dir} or online ({text[:200]})") from None
    return Path(folder) / FILE


# ----------------------------------------------------------------------
# Trackio


def trackio_artifact_file(project, name, alias):
    from lib.trackers.trackio_tracker import import_trackio

    trackio = import_trackio()
    storage = trackio.SQLiteStorage
    record = storage.get_artifact_manifest(project, name, alias)
    if record is None:
        raise ArtifactError(f"no artifact {name}:{alias} in Trackio project {project} "
                            f"({storage.get_project_db_path(project)})")
    artifact = trackio.Artifact(name=record["name"], type=record["type"])
    artifact._hydrate_from_db(  # what trackio's Run.use_artifact does with the record, without a run
        project=project, version=record["version"], aliases=record["aliases"], manifest=record["manifest"],
        manifest_digest=record["manifest_digest"], size_bytes=record["size_bytes"],
        description=record["description"], metadata=record["metadata"],
    )
    root = Path(trackio.utils.TRACKIO_DIR) / "artifact-downloads" / project / f"{name}_v{record['version']}"
    return Path(artifact.download(root)) / FILE
