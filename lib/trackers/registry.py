"""Tracker names -> backend classes, and open_trackers(), the one way to start tracking.

Backends are imported only when named, so `--tracker none` never imports
trackio or wandb (each costs a second or more and starts threads).
"""

import contextlib
import importlib
import sys

from lib.trackers.base import TrackerError, Trackers
from lib.trackers.journal import Journal, journal_path, journaled_points, read_journal
from lib.trackers.naming import default_project_name, default_run_name
from lib.trackers.run_info import run_config

# --tracker name -> (module, class).  Add a backend here and in Kconfig.tracking.
TRACKERS = {
    "trackio": ("lib.trackers.trackio_tracker", "TrackioTracker"),
    "wandb": ("lib.trackers.wandb_tracker", "WandbTracker"),
}
NONE = "none"


def parse_tracker_names(text):
    """['trackio', 'wandb'] from 'trackio,wandb'; [] from 'none' or ''.
    Duplicates are dropped; an unknown name is a TrackerError."""
    names = [name.strip().lower() for name in str(text or "").split(",") if name.strip()]
    if names in ([], [NONE]):
        return []
    choices = ", ".join([NONE, *TRACKERS])
    if NONE in names:
        raise TrackerError(f"--tracker {text}: '{NONE}' cannot be combined with other trackers")
    for name in names:
        if name not in TRACKERS:
            raise TrackerError(
                f"--tracker {text}: unknown tracker '{name}'; choose {choices}, or a list such as trackio,wandb"
            )
    return list(dict.fromkeys(names))


def backend_class(name):
    """The Tracker class registered under `name`, imported now."""
    module_name, class_name = TRACKERS[name]
    return getattr(importlib.import_module(module_name), class_name)


def earlier_points(out_dir):
    """{step: metrics} journaled in `out_dir` by the sessions before a restart."""
    path = journal_path(out_dir) if out_dir else None
    if path is None or not path.is_file():
        return {}
    try:
        return journaled_points(read_journal(path))
    except ValueError as exc:
        raise TrackerError(f"{exc}; move it away to resume without it") from None
    except OSError as exc:
        raise TrackerError(f"cannot read {path} ({exc.strerror}); make it readable or move it away") from None


def open_journal(out_dir):
    """The Journal of `out_dir`, or TrackerError when it cannot be written
    (e.g. --out-dir lies under a regular file, or is read-only)."""
    try:
        return Journal(out_dir)
    except OSError as exc:
        raise TrackerError(
            f"cannot write {journal_path(out_dir)} ({exc.strerror}); choose a writable --out-dir"
        ) from None


def open_trackers(
    names,
    *,
    project,
    run_name,
    config,
    out_dir,
    resume_state=None,
    wandb_entity="",
    wandb_offline=False,
    trackio_dir="",
):
    """Start every tracker in `names` (the --tracker string) and return the
    Trackers the loop logs to.  Raises TrackerError, before any training,
    when a name is unknown, a package is missing or a backend cannot start.

    An empty project / run name gets the automatic one (naming.py).  With
    `resume_state` (a checkpoint's Trackers.state_dict()), the same project,
    run and run ids are used again and points the backends already hold are
    not logged twice.  Every record also goes to out_dir/tracking.jsonl
    (when `out_dir` is given), even with --tracker none.
    """
    selected = parse_tracker_names(names)
    saved = resume_state or {}
    project = saved.get("project") or project or default_project_name()
    run_name = saved.get("run_name") or run_name or default_run_name(config)
    full_config = run_config(config, project=project, run_name=run_name)
    options = {"wandb_entity": wandb_entity, "wandb_offline": wandb_offline, "trackio_dir": trackio_dir}

    # The journal is read and opened before any backend starts, so a bad
    # --out-dir or a damaged journal stops here, with no backend run to close.
    earlier = earlier_points(out_dir) if resume_state is not None else {}
    journal = open_journal(out_dir) if out_dir else None
    backends = []
    try:
        for name in selected:
            backends.append(
                backend_class(name)(
                    project=project,
                    run_name=run_name,
                    config=full_config,
                    resume_state=saved.get("backends", {}).get(name, {}) if resume_state is not None else None,
                    options=options,
                )
            )
    except BaseException:
        for backend in backends:  # close what already started: no half-open runs
            with contextlib.suppress(Exception):
                backend.finish()
        if journal is not None:
            with contextlib.suppress(OSError):  # cleanup: never hide the error that got us here
                journal.discard()
        raise

    trackers = Trackers(
        backends,
        project=project,
        run_name=run_name,
        journal=journal,
        out_dir=out_dir,
        last_step=saved.get("last_step"),
    )
    if journal is not None:
        journal.write(
            {
                "kind": "start",
                "project": project,
                "run_name": run_name,
                "trackers": selected,
                "resumed": resume_state is not None,
                "config": full_config,
                "backends": trackers.state_dict()["backends"],
            }
        )
    if selected:
        print(f"tracking: {','.join(selected)} -> project {project}, run {run_name}", file=sys.stderr, flush=True)
    for name, added in trackers.catch_up(earlier).items():
        if added:
            print(
                f"tracking: {name} lacked {added} journaled points from before the restart; sent them", file=sys.stderr
            )
    return trackers
