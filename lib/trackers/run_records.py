"""Find a tracked run's record, by name, id or folder, where runs are recorded.

`find_runs(query)` takes `query` as

  * an out-dir holding tracking.jsonl (or that file): the journal;
  * a W&B run folder (offline-run-<time>-<id>) or its run-<id>.wandb file;
  * otherwise a run name or run id, looked up in every Trackio database
    (*.db) of the Trackio folder and among the W&B offline runs under
    ./wandb and $WANDB_DIR/wandb.

Each match is a RunRecord: where it was found, its name, id and project, and
the config the run recorded (lib/trackers/run_info.py; a resumed run's first
session).  One run logged to Trackio and W&B is one match (the same
provenance.run_uid, or for older records the same config).  `results()`
reads, for the chosen record only, its summary (best_val_loss, ...) and its
logged history.  Nothing here imports trackio; wandb's protobuf module is
imported only when there are offline runs to read.
"""

import contextlib
import json
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from lib.trackers.journal import JOURNAL_NAME, journaled_points, read_journal
from lib.trackers.trackio_tracker import SUMMARY_PREFIX, database_dir
from lib.trackers.wandb_records import offline_run_files, offline_run_folders, read_offline_run

SOURCES = ("journal", "trackio", "wandb")


@dataclass
class RunRecord:
    """One run as one backend (or the journal) recorded it."""

    source: str  # one of SOURCES
    location: Path  # the journal, the Trackio database, or the W&B folder holding the run's folders
    name: str
    run_id: str  # the backend's id of the run ("" for the journal)
    project: str
    config: dict  # "_"-prefixed keys the backends add (_wandb, _Created) are dropped
    trackio_dir: str = ""  # where the run's Trackio database is, when known
    wandb_dir: str = ""  # the folder holding its offline-run-* folders, when known
    wandb_offline: bool = False
    also: list = field(default_factory=list)  # the same run in other backends: [RunRecord]
    ids: dict = field(default_factory=dict)  # {backend: run id}; a journal knows every backend's

    @property
    def uid(self):
        return (self.config.get("provenance") or {}).get("run_uid")

    def describe(self):
        """'R (trackio id 1f3..., wandb id x8k..., project P)'."""
        ids = {}
        for record in [self, *self.also]:
            ids.update(record.ids or ({record.source: record.run_id} if record.run_id else {}))
        ids = ", ".join(f"{backend} id {run_id}" for backend, run_id in ids.items())
        return f"{self.name} ({ids or 'no id'}, project {self.project})"

    def where(self):
        return ", ".join(f"{r.source} {r.location}" for r in [self, *self.also])

    def results(self):
        """(summary {key: value}, history {metric: {step: value}}) as this
        backend recorded them; ({}, {}) when it holds none."""
        return _RESULTS[self.source](self)


def _clean(config):
    return {key: value for key, value in (config or {}).items() if not key.startswith("_")}


def default_trackio_dir():
    """$TRACKIO_DIR, else Trackio's default: $HF_HOME/trackio (~/.cache/huggingface/trackio)."""
    folder = os.environ.get("TRACKIO_DIR") or Path(os.environ.get("HF_HOME") or "~/.cache/huggingface") / "trackio"
    return database_dir(folder)


def default_wandb_dirs():
    """./wandb and $WANDB_DIR/wandb (each once): where offline runs are written."""
    folders = [Path("wandb").resolve()]
    if os.environ.get("WANDB_DIR"):
        folders.append((Path(os.environ["WANDB_DIR"]).expanduser() / "wandb").resolve())
    return list(dict.fromkeys(folders))


# ----------------------------------------------------------------------------
# The journal


def journal_record(path):
    """The RunRecord of a journal (tracking.jsonl or the out-dir holding it)."""
    path = Path(path)
    path = path / JOURNAL_NAME if path.is_dir() else path
    starts = [r for r in read_journal(path) if r["kind"] == "start"]
    if not starts:
        raise ValueError(f"{path} has no start record; it was not written by a training run")
    first = starts[0]
    backends = first.get("backends", {})
    return RunRecord(
        source="journal",
        location=path,
        name=first["run_name"],
        run_id="",
        ids={name: state["run_id"] for name, state in backends.items() if state.get("run_id")},
        project=first["project"],
        config=_clean(first["config"]),
        trackio_dir=backends.get("trackio", {}).get("trackio_dir", ""),
        wandb_dir=backends.get("wandb", {}).get("wandb_dir", ""),
        wandb_offline=backends.get("wandb", {}).get("mode") == "offline",
    )


def _journal_results(record):
    records = read_journal(record.location)
    summaries = [r["metrics"] for r in records if r["kind"] == "summary"]
    history = {}
    for step, metrics in journaled_points(records).items():
        for key, value in metrics.items():
            history.setdefault(key, {})[step] = value
    return (summaries[-1] if summaries else {}), history


# ----------------------------------------------------------------------------
# Trackio


def _query(db_path, sql, params):
    """Rows of a query on a Trackio database; [] when it lacks the table
    (Trackio creates tables with its first write)."""
    try:
        with contextlib.closing(sqlite3.connect(db_path, timeout=30)) as conn:  # SELECTs only
            return conn.execute(sql, params).fetchall()
    except sqlite3.Error as exc:
        if "no such table" in str(exc):
            return []
        raise ValueError(f"cannot read the Trackio database {db_path} ({exc})") from None


def trackio_records(query, trackio_dir):
    """RunRecords of the runs named `query`, or with run id `query`, in every
    database of `trackio_dir`."""
    found = []
    for db_path in sorted(Path(trackio_dir).glob("*.db")):
        rows = _query(db_path, "SELECT run_id, run_name, config FROM configs WHERE run_name = ? OR run_id = ? "
                      "ORDER BY id", (query, query))
        for run_id, run_name, config in rows:
            config = _clean(json.loads(config))
            found.append(RunRecord(source="trackio", location=db_path, name=run_name, run_id=run_id,
                                   project=config.get("tracker_project") or db_path.stem, config=config,
                                   trackio_dir=str(db_path.parent)))
    return found


def _trackio_results(record):
    rows = _query(record.location, "SELECT step, metrics FROM metrics WHERE run_id = ? ORDER BY id", (record.run_id,))
    summary, history = {}, {}
    for step, metrics in rows:
        for key, value in json.loads(metrics).items():
            if key.startswith(SUMMARY_PREFIX):
                summary[key[len(SUMMARY_PREFIX) :]] = value
            else:
                history.setdefault(key, {}).setdefault(step, value)  # a step is kept once: its first value
    return summary, history


# ----------------------------------------------------------------------------
# W&B offline files


def wandb_record(wandb_dir, run_id):
    """The RunRecord of offline run `run_id` under `wandb_dir` (its first
    session's config), or None when it has no readable file."""
    files = offline_run_files(wandb_dir, run_id)
    if not files:
        return None
    run = read_offline_run(files[0], header_only=True)
    return RunRecord(source="wandb", location=Path(wandb_dir), name=run.name, run_id=run.run_id or run_id,
                     project=run.project, config=_clean(run.config), wandb_dir=str(wandb_dir), wandb_offline=True)


def wandb_folder_record(path):
    """The RunRecord of a W&B run folder or .wandb file, or None."""
    path = Path(path)
    folder = path.parent if path.suffix == ".wandb" else path
    run_files = sorted(folder.glob("run-*.wandb"))
    if not run_files:
        return None
    run_id = run_files[0].stem[len("run-") :]
    return wandb_record(folder.parent, run_id)


def wandb_records(query, wandb_dir):
    """RunRecords of the offline runs under `wandb_dir` with id or name `query`."""
    folders = offline_run_folders(wandb_dir) if Path(wandb_dir).is_dir() else []
    ids = [folder.name.split("-")[3] for folder in folders]  # offline-run-<time>-<id>[-<n>]
    found = []
    for run_id in dict.fromkeys(ids):
        if run_id == query:
            record = wandb_record(wandb_dir, run_id)
        else:
            files = offline_run_files(wandb_dir, run_id)
            header = read_offline_run(files[0], header_only=True) if files else None
            record = wandb_record(wandb_dir, run_id) if header is not None and header.name == query else None
        if record is not None:
            found.append(record)
    return found


def _wandb_results(record):
    summary, history = {}, {}
    for path in offline_run_files(record.wandb_dir, record.run_id):
        run = read_offline_run(path)
        summary.update(run.summary)
        for step, row in run.history:
            for key, value in row.items():
                if not key.startswith("_"):
                    history.setdefault(key, {}).setdefault(step, value)
    return {k: v for k, v in summary.items() if not k.startswith("_")}, history


_RESULTS = {"journal": _journal_results, "trackio": _trackio_results, "wandb": _wandb_results}


# ----------------------------------------------------------------------------
# Finding


def _merge(records):
    """One RunRecord per run: records of other backends with the same run_uid
    (or, without one, the same config) go into the first one's `also`."""
    runs = []
    for record in records:
        same = next((run for run in runs if record.source not in {r.source for r in [run, *run.also]}
                     and (run.uid == record.uid if run.uid or record.uid else run.config == record.config)), None)
        if same is None:
            runs.append(record)
        else:
            same.also.append(record)
    return runs


def find_runs(query, trackio_dir=None, wandb_dirs=None):
    """(matching RunRecords, where it looked: a list of places).  A damaged
    database or file is a ValueError naming it."""
    path = Path(query).expanduser()
    if path.exists():
        if (path / JOURNAL_NAME).is_file() or path.name == JOURNAL_NAME:
            return [journal_record(path)], [str(path)]
        record = wandb_folder_record(path)
        return ([record] if record else []), [f"{path} (neither an out-dir with {JOURNAL_NAME} nor a W&B run folder)"]
    trackio_dir = database_dir(trackio_dir) if trackio_dir else default_trackio_dir()
    wandb_dirs = [Path(d).expanduser().resolve() for d in wandb_dirs] if wandb_dirs else default_wandb_dirs()
    records = trackio_records(query, trackio_dir) if trackio_dir.is_dir() else []
    for folder in wandb_dirs:
        records += wandb_records(query, folder)
    databases = len(list(trackio_dir.glob("*.db"))) if trackio_dir.is_dir() else 0
    searched = [f"the {databases} Trackio databases in {trackio_dir}",
                *(f"the W&B offline runs in {folder}" for folder in wandb_dirs),
                f"for an out-dir or W&B run folder {query}"]
    return _merge(records), searched
