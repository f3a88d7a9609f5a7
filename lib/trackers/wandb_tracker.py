"""Weights & Biases backend, online or offline.

Offline (--wandb-offline, or WANDB_MODE=offline) writes
<WANDB_DIR or .>/wandb/offline-run-<time>-<id>/run-<id>.wandb and asks
nothing; scripts/tracking/wandb_sync.py uploads those folders later.  Online needs an
API key from `wandb login` (~/.netrc) or WANDB_API_KEY: without one, this
fails before training with that fix, instead of wandb's interactive prompt.
The key is never read or written here.

W&B history only grows: a row at a step below the run's current step is
dropped.  So a resumed run skips every step up to the last one the run
already holds (online: wandb's resumed step; offline: the run's earlier
.wandb files), and replay can append missing steps but not fill holes.
"""

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

from lib.trackers.base import Tracker, TrackerError
from lib.trackers.step_filter import StepFilter
from lib.trackers.wandb_records import offline_run_files, read_offline_run

INSTALL = "pip install wandb"
OFFLINE_MODES = ("offline", "dryrun")
FILE_WAIT_SECONDS = 10
# W&B holds back an alert whose title was sent less than this long ago.
ALERT_WAIT_SECONDS = 1


def import_wandb():
    """The wandb module, or TrackerError naming the install command."""
    try:
        import wandb
    except ImportError as exc:
        raise TrackerError(f"tracker wandb is not available ({exc}); install it with: {INSTALL}") from None
    return wandb


def has_api_key(wandb):
    """Whether wandb finds an API key (~/.netrc or WANDB_API_KEY).
    prompt=False: report a missing key instead of waiting for typed input."""
    return wandb.login(prompt=False, verify=False)


def read_run_file(path):
    """read_offline_run(path), or TrackerError naming the damaged file."""
    try:
        return read_offline_run(path)
    except ValueError as exc:
        raise TrackerError(
            f"tracker wandb: {exc}; move its folder {Path(path).parent} away, or start a new --out-dir"
        ) from None


def _mode(offline_flag):
    """'offline' or 'online' from --wandb-offline and WANDB_MODE."""
    env_mode = os.environ.get("WANDB_MODE", "").strip().lower()
    if env_mode == "disabled":
        raise TrackerError("tracker wandb: WANDB_MODE=disabled turns wandb off; use --tracker none or unset WANDB_MODE")
    return "offline" if offline_flag or env_mode in OFFLINE_MODES else "online"


@dataclass(frozen=True)
class Config:
    """W&B's settings (lib/trackers/Kconfig), named after their flags."""

    wandb_entity: str  # --wandb-entity: "" is the account's default entity
    wandb_offline: bool  # --wandb-offline: local files, `make wandb-sync` later


class WandbTracker(Tracker):
    """Logs to a W&B run; reattaches to the same run id when resuming, in the
    folder the run was written to."""

    name = "wandb"

    @staticmethod
    def settings_from_state(state):
        """The settings that reopen the run `state` (a state_dict()) describes."""
        return Config(wandb_entity=state.get("entity", ""), wandb_offline=state.get("mode") == "offline")

    def __init__(self, *, project, run_name, config, settings, group="", resume_state=None):
        wandb = import_wandb()
        self.mode = _mode(settings.wandb_offline)
        if self.mode == "online" and not has_api_key(wandb):
            raise TrackerError(
                "tracker wandb has no API key; run `wandb login`, or set WANDB_MODE=offline (--wandb-offline)"
            )
        resuming = resume_state is not None and bool(resume_state.get("run_id"))
        try:
            self._run = wandb.init(
                entity=settings.wandb_entity or None,
                project=project,
                name=run_name,
                group=group or None,
                id=resume_state["run_id"] if resuming else None,
                resume="allow" if resuming else None,
                config=config,
                mode=self.mode,
                # The saved folder holds wandb/offline-run-*; wandb adds the wandb/ itself.
                dir=str(Path(resume_state["wandb_dir"]).parent) if resuming and resume_state.get("wandb_dir") else None,
            )
        except Exception as exc:
            raise TrackerError(f"tracker wandb cannot start: {exc}".splitlines()[0]) from None
        self._wandb = wandb
        try:
            first_new_step = self._first_new_step() if resuming else 0
        except TrackerError:
            with contextlib.suppress(Exception):  # the run started above: close it, keep this error
                self._run.finish()
            raise
        self.filter = StepFilter(first_new_step=first_new_step)

    def _first_new_step(self):
        """The lowest step this run may still log after a restart."""
        if self.mode == "online":
            return self._run.step  # wandb's next step, from the server's history
        earlier = [path for path in offline_run_files(self.wandb_dir, self._run.id) if path != self.run_file]
        last_steps = [read_run_file(path).last_step for path in earlier]
        return max((step + 1 for step in last_steps if step is not None), default=0)

    @property
    def wandb_dir(self):
        """The folder holding this run's offline-run-* / run-* folder."""
        return Path(self._run.settings.wandb_dir)

    @property
    def run_file(self):
        """This process's .wandb file."""
        return Path(self._run.settings.sync_file)

    def summary(self, metrics, step):
        self._run.summary.update(metrics)

    def table(self, key, columns, rows, step):
        # A wandb.Table per call: its rows go to a media file in the run's
        # files/ folder, the history row at `step` points at it.
        self.log_value(key, self._wandb.Table(columns=columns, data=rows), step)

    def alert(self, title, text, level="WARN", step=None):
        # W&B sends it by e-mail / Slack as the user's settings say; offline,
        # the alert record waits in the .wandb file for `make wandb-sync`.
        # W&B allows titles of under 64 characters.
        if hasattr(self._run, "alert"):
            self._run.alert(title=title[:63], text=text, level=level, wait_duration=ALERT_WAIT_SECONDS)

    def log_checkpoint(self, path, name, aliases):
        artifact = self._wandb.Artifact(name, type="model")
        artifact.add_file(path, name="ckpt.pt")
        self._run.log_artifact(artifact, aliases=aliases)

    def state_dict(self):
        return {
            "project": self._run.project,
            "entity": self._run.entity or "",
            "run_name": self._run.name,
            "run_id": self._run.id,
            "mode": self.mode,
            "wandb_dir": str(self.wandb_dir),
        }

    def finish(self):
        self._run.finish()
        if self.mode != "offline" or not self.filter.sent:
            return
        # Offline, the file is the whole record: check every point reached it.
        # wandb-core may still be writing the last records when finish()
        # returns (tens of milliseconds), hence the wait.
        expected = self.filter.points_sent
        deadline = time.monotonic() + FILE_WAIT_SECONDS
        while (stored := self._points_in_file()) < expected and time.monotonic() < deadline:
            time.sleep(0.05)
        if stored < expected:
            raise TrackerError(f"wandb wrote {stored} of {expected} points of run {self._run.id} to {self.run_file}")

    def _points_in_file(self):
        rows = read_run_file(self.run_file).history
        return sum(1 for _, row in rows for key in row if key in self.filter.sent)


BACKEND = WandbTracker
