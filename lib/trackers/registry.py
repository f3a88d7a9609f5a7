"""The tracker backends, found by name, and open_trackers(), the one way to start tracking.

A backend is a module lib/trackers/<name>_tracker.py (its --tracker name is
the file name without "_tracker") holding `Config`, a frozen dataclass of
its own settings whose fields are named after their train.py flags, and
`BACKEND`, its Tracker class.  Its options live in lib/trackers/Kconfig
(TRACKER_<NAME> and its settings).  Nothing else lists the backends: adding
one is that module, its Kconfig entries and its test.

Backend modules import their packages (trackio, wandb) only when a run
starts, so `--tracker none` never imports them (each costs a second or more
and starts threads).
"""

import contextlib
import sys
from dataclasses import dataclass, field

import lib.trackers  # the package whose *_tracker modules are the backends
from lib.plugins import from_flags, module_names, part_module
from lib.trackers.base import TrackerError, Trackers
from lib.trackers.journal import Journal, journal_path, journaled_points, read_journal
from lib.trackers.naming import default_project_name, default_run_name
from lib.trackers.run_info import run_config

NONE = "none"
MODULE_SUFFIX = "_tracker"


def backend_names():
    """Every backend's --tracker name, e.g. ('trackio', 'wandb')."""
    return module_names(lib.trackers, MODULE_SUFFIX)


def backend_module(name):
    """The module of backend `name`, imported now (its package is not)."""
    try:
        return part_module(lib.trackers, name, "--tracker", MODULE_SUFFIX)
    except ValueError:
        raise TrackerError(f"unknown tracker '{name}'; choose {', '.join([NONE, *backend_names()])}") from None


def backend_class(name):
    """The Tracker class of backend `name`."""
    return backend_module(name).BACKEND


def parse_tracker_names(text):
    """['trackio', 'wandb'] from 'trackio,wandb'; [] from 'none' or ''.
    Duplicates are dropped; an unknown name is a TrackerError."""
    names = [name.strip().lower() for name in str(text or "").split(",") if name.strip()]
    if names in ([], [NONE]):
        return []
    choices = ", ".join([NONE, *backend_names()])
    if NONE in names:
        raise TrackerError(f"--tracker {text}: '{NONE}' cannot be combined with other trackers")
    for name in names:
        if name not in backend_names():
            raise TrackerError(
                f"--tracker {text}: unknown tracker '{name}'; choose {choices}, or a list such as trackio,wandb"
            )
    return list(dict.fromkeys(names))


@dataclass(frozen=True)
class TrackingConfig:
    """The Experiment Tracking options: which backends, the names, and each
    backend's own settings ({name: its Config})."""

    tracker: str  # the --tracker list, e.g. "trackio,wandb" or "none"
    tracker_project: str
    tracker_run_name: str
    tracker_group: str  # "" for none
    # Built from the flags named like each Config's fields; not a flag itself.
    backends: dict = field(default_factory=dict, metadata={"derived": True})
    # LOG_CHECKPOINTS: every checkpoint also as an artifact (lib/trackers/artifacts.py)
    log_checkpoints: bool = False

    def __post_init__(self):
        names = parse_tracker_names(self.tracker)
        if sorted(names) != sorted(self.backends):
            raise TrackerError(f"--tracker {self.tracker}: settings given for {', '.join(self.backends) or 'none'}")

    @property
    def names(self):
        return parse_tracker_names(self.tracker)

    @classmethod
    def from_flags(cls, flags):
        """From train.py's parsed flags (a dict): each selected backend's
        Config takes the flags named like its fields."""
        names = parse_tracker_names(flags["tracker"])
        backends = {name: from_flags(backend_module(name).Config, flags) for name in names}
        return cls(tracker=",".join(names) or NONE, tracker_project=flags["tracker_project"],
                   tracker_run_name=flags["tracker_run_name"], tracker_group=flags["tracker_group"],
                   backends=backends, log_checkpoints=flags["log_checkpoints"])


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


def journal_state(out_dir):
    """The tracker state (as Trackers.state_dict()) of the last session that
    journaled into `out_dir`, or None: lets `--resume` continue the same
    tracker runs when a run was stopped before its first checkpoint."""
    path = journal_path(out_dir)
    if not path.is_file():
        return None
    try:
        starts = [record for record in read_journal(path) if record["kind"] == "start"]
    except ValueError as exc:
        raise TrackerError(f"{exc}; move it away to resume without it") from None
    if not starts:
        return None
    start = starts[-1]
    return {"project": start["project"], "run_name": start["run_name"], "group": start.get("group", ""),
            "last_step": None, "backends": start.get("backends", {})}


def open_journal(out_dir):
    """The Journal of `out_dir`, or TrackerError when it cannot be written
    (e.g. --out-dir lies under a regular file, or is read-only)."""
    try:
        return Journal(out_dir)
    except OSError as exc:
        raise TrackerError(
            f"cannot write {journal_path(out_dir)} ({exc.strerror}); choose a writable --out-dir"
        ) from None


def open_trackers(tracking, *, config, out_dir, resume_state=None):
    """Start every backend of `tracking` (a TrackingConfig) and return the
    Trackers the loop logs to; `config` is the run's settings (a dict).  Raises TrackerError, before any training,
    when a name is unknown, a package is missing or a backend cannot start.

    An empty project / run name gets the automatic one (naming.py).  With
    `resume_state` (a checkpoint's Trackers.state_dict()), the same project,
    run and run ids are used again and points the backends already hold are
    not logged twice.  Every record also goes to out_dir/tracking.jsonl
    (when `out_dir` is given), even with --tracker none.
    """
    selected = tracking.names
    saved = resume_state or {}
    project = saved.get("project") or tracking.tracker_project or default_project_name()
    run_name = saved.get("run_name") or tracking.tracker_run_name or default_run_name(config)
    group = saved.get("group", tracking.tracker_group)
    full_config = run_config(config, project=project, run_name=run_name)

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
                    group=group,
                    settings=tracking.backends[name],
                    resume_state=saved.get("backends", {}).get(name, {}) if resume_state is not None else None,
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
        group=group,
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
                "group": group,
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
