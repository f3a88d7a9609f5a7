"""Trackio backend: one local SQLite database per project.

The database is <TRACKIO_DIR>/<project>.db (tables `metrics`: one row per
log call with run_id, step and a JSON object of values; `configs`: the run
config), TRACKIO_DIR defaulting to $HF_HOME/trackio, i.e.
~/.cache/huggingface/trackio.  Trackio reads TRACKIO_DIR once, when it is
first imported, so --trackio-dir is put into the environment before that.

Trackio queues log calls and writes them from a background thread every
0.5 s; its log() never raises, a failed write is only a Python warning.  So
finish() reads the database back and raises TrackerError when points are
missing: Trackers then prints the replay command.  The same read-back tells a
resumed run which points Trackio already holds, so none is written twice
(step_filter.py).
"""

import contextlib
import io
import json
import os
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path

from lib.trackers.base import Tracker, TrackerError
from lib.trackers.step_filter import StepFilter

INSTALL = "pip install trackio"
# Trackio has no run summary: the summary is logged as summary/<key> at the
# last step, so `trackio get metric --metric summary/best_val_loss` shows it.
SUMMARY_PREFIX = "summary/"


def database_dir(trackio_dir):
    """The absolute folder a --trackio-dir / TRACKIO_DIR setting names: the
    one rule for training and `make trackio-show`, so both use the same
    databases (Trackio itself would not expand '~')."""
    return Path(trackio_dir).expanduser().resolve()


def import_trackio(trackio_dir=""):
    """The trackio module, storing into `trackio_dir` when given."""
    if trackio_dir:
        wanted = database_dir(trackio_dir)
        loaded = sys.modules.get("trackio")
        if loaded is not None and Path(loaded.utils.TRACKIO_DIR).resolve() != wanted:
            raise TrackerError(
                f"--trackio-dir {trackio_dir}: trackio was already imported with TRACKIO_DIR="
                f"{loaded.utils.TRACKIO_DIR}; set the folder before trackio is first imported"
            )
        os.environ["TRACKIO_DIR"] = str(wanted)
    try:
        import trackio
    except ImportError as exc:
        raise TrackerError(f"tracker trackio is not available ({exc}); install it with: {INSTALL}") from None
    return trackio


def project_db_path(project):
    """Path of a project's database (Trackio's own rule: TRACKIO_DIR and the
    project name reduced to letters, digits, '-' and '_')."""
    import_trackio()
    from trackio.sqlite_storage import SQLiteStorage

    return Path(SQLiteStorage.get_project_db_path(project))


def stored_points(db_path, run_id):
    """{metric: sorted list of steps} that a run has in a Trackio database.
    A database that cannot be read (e.g. damaged) is a TrackerError."""
    if not Path(db_path).is_file():
        return {}
    steps = {}
    try:
        with contextlib.closing(sqlite3.connect(db_path, timeout=30)) as conn:
            rows = conn.execute("SELECT step, metrics FROM metrics WHERE run_id = ?", (run_id,)).fetchall()
    except sqlite3.Error as exc:
        if "no such table" in str(exc):  # Trackio creates it with its first write
            return {}
        raise TrackerError(
            f"cannot read the Trackio database {db_path} ({exc}); if it is damaged, move it away "
            "or point --trackio-dir at another folder"
        ) from None
    for step, metrics in rows:
        for key in json.loads(metrics):
            steps.setdefault(key, []).append(step)
    return {key: sorted(values) for key, values in steps.items()}


def _check_writable(db_path):
    """Fail before training when Trackio could not store anything: Trackio
    itself would only warn, on every flush, from its background thread."""
    folder = db_path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TrackerError(
            f"tracker trackio cannot create {folder} ({exc.strerror}); "
            "point --trackio-dir (or TRACKIO_DIR) at a writable folder"
        ) from None
    for target in (folder, db_path):
        if target.exists() and not os.access(target, os.W_OK):
            raise TrackerError(
                f"tracker trackio cannot write {target}; point --trackio-dir (or TRACKIO_DIR) at a writable folder"
            )


@dataclass(frozen=True)
class Config:
    """Trackio's settings (lib/trackers/Kconfig), named after their flags."""

    trackio_dir: str  # --trackio-dir: the databases' folder; "" is Trackio's default
    trackio_gpu_metrics: bool  # --trackio-gpu-metrics: Trackio's own gpu/* system metrics


class TrackioTracker(Tracker):
    """Logs to a Trackio run; reattaches to it by name when resuming."""

    name = "trackio"

    @staticmethod
    def settings_from_state(state):
        """The settings that reopen the run `state` (a state_dict()) describes."""
        return Config(trackio_dir=state.get("trackio_dir", ""),
                      trackio_gpu_metrics=state.get("trackio_gpu_metrics", False))

    def __init__(self, *, project, run_name, config, settings, group="", resume_state=None):
        trackio = import_trackio(settings.trackio_dir)
        # A Space or a self-hosted server (TRACKIO_SPACE_ID / TRACKIO_SERVER_URL)
        # is Trackio's business: the local read-back checks are skipped then.
        self._local = not (os.environ.get("TRACKIO_SPACE_ID") or os.environ.get("TRACKIO_SERVER_URL"))
        self.db_path = project_db_path(project)
        if self._local:
            _check_writable(self.db_path)
        try:
            self._run = trackio.init(
                project=project,
                name=run_name,
                group=group or None,
                config=config,
                resume="allow" if resume_state is not None else "never",
                embed=False,
                auto_log_gpu=settings.trackio_gpu_metrics,
            )
        except Exception as exc:
            raise TrackerError(f"tracker trackio cannot start: {exc}") from None
        self._trackio = trackio
        self.project = project
        self._gpu_metrics = settings.trackio_gpu_metrics
        try:
            stored = stored_points(self.db_path, self._run.id) if self._local and resume_state is not None else {}
        except TrackerError:
            with contextlib.suppress(Exception):  # the run started above: close it, keep this error
                self._close_run()
            raise
        self.filter = StepFilter(stored=stored)

    def summary(self, metrics, step):
        self.log({SUMMARY_PREFIX + key: value for key, value in metrics.items()}, step)

    def table(self, key, columns, rows, step):
        # A trackio.Table is stored as one value of the metrics row at `step`
        # (a list of {column: value} objects), shown as a table.
        self.log_value(key, self._trackio.Table(columns=columns, data=rows), step)

    def alert(self, title, text, level="WARN", step=None):
        # Trackio >= 0.7: stored in the database's alerts table, shown in the
        # dashboard, sent to a webhook when one is set (TRACKIO_WEBHOOK_URL).
        if not hasattr(self._run, "alert"):
            return
        # Trackio prints its own copy of the alert: Trackers already did.
        with contextlib.redirect_stdout(io.StringIO()):
            self._run.alert(title=title, text=text, level=self._trackio.AlertLevel[level], step=step)

    def log_checkpoint(self, path, name, aliases):
        # Trackio moves `latest` onto each new version itself.
        self._run.log_artifact(path, name=name, type="model", aliases=[a for a in aliases if a != "latest"])

    def state_dict(self):
        return {
            "project": self.project,
            "run_name": self._run.name,
            "run_id": self._run.id,
            "trackio_dir": str(self.db_path.parent),
            "trackio_gpu_metrics": self._gpu_metrics,
        }

    def _close_run(self):
        # trackio.finish() also forgets the current run, so Trackio's exit
        # hook does not finish it a second time; it waits for the writer thread.
        if self._trackio.context_vars.current_run.get() is self._run:
            self._trackio.finish()
        else:
            self._run.finish()

    def finish(self):
        self._close_run()
        sent = self.filter.sent
        if not self._local or not sent:
            return
        stored = stored_points(self.db_path, self._run.id)
        expected = sum(self.filter.stored_count(key) + count for key, count in sent.items())
        found = sum(len(stored.get(key, ())) for key in sent)
        if found < expected:
            raise TrackerError(
                f"trackio stored {found} of {expected} points of run {self._run.name} in {self.db_path}; "
                "the others were lost (see Trackio's warnings)"
            )


BACKEND = TrackioTracker
