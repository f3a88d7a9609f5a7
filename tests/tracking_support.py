"""What the tracking tests share: paths, and readers that take a run back out
of the real backends (Trackio's SQLite database, W&B's offline run files) and
out of our journal, to compare with what was logged.

A plain module beside the tests (pytest and `python tests/test_*.py` both put
tests/ on the import path), imported as `from tracking_support import ...`.
"""

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from lib.trackers import TrackingConfig
from lib.trackers.journal import journal_path, read_journal
from lib.trackers.wandb_records import offline_run_files, read_offline_run

REPO_ROOT = Path(__file__).resolve().parent.parent
TRAIN = REPO_ROOT / "gpt2" / "train.py"
REPLAY = REPO_ROOT / "scripts" / "tracking" / "replay_journal.py"
WANDB_SYNC = REPO_ROOT / "scripts" / "tracking" / "wandb_sync.py"
TRAIN_METRICS = ("train/loss", "train/lr", "train/sparsity", "train/tokens_per_sec")
VAL_METRICS = ("val/loss", "val/perplexity")
SUMMARY_KEYS = (
    "best_val_loss",
    "final_train_loss",
    "final_val_loss",
    "total_training_time",
    "tokens_seen",
    "tokens_per_sec",
    "sparsity",
    "peak_memory_gb",
)


def tracking(names, *, project="", run_name="", extra=()):
    """The TrackingConfig train.py builds from `--tracker names` and the given
    names (Kconfig defaults for every backend setting; `extra`: more flags)."""
    from gpt2.cli import parse_args

    flags = parse_args(["--tracker", names, "--tracker-project", project, "--tracker-run-name", run_name, *extra])
    return TrackingConfig.from_flags(vars(flags))


def trackio_rows(db_path, run_name):
    """{metric: [(step, value), ...]} of a run in a Trackio database, in row order.
    Trackio creates the metrics table with its first successful write, so a
    database whose every write failed has none: that run holds no points."""
    with sqlite3.connect(db_path) as conn:
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'metrics'").fetchone():
            return {}
        rows = conn.execute("SELECT step, metrics FROM metrics WHERE run_name = ? ORDER BY id", (run_name,)).fetchall()
    points = {}
    for step, metrics in rows:
        for key, value in json.loads(metrics).items():
            points.setdefault(key, []).append((step, value))
    return points


def trackio_run_config(db_path, run_name):
    with sqlite3.connect(db_path) as conn:
        rows = conn.execute("SELECT config FROM configs WHERE run_name = ?", (run_name,)).fetchall()
    assert len(rows) == 1, f"expected one config row for {run_name}, got {len(rows)}"
    return json.loads(rows[0][0])


def trackio_run_count(db_path, run_name):
    with sqlite3.connect(db_path) as conn:
        return conn.execute("SELECT COUNT(DISTINCT run_id) FROM metrics WHERE run_name = ?", (run_name,)).fetchone()[0]


def wandb_rows(wandb_dir, run_id):
    """{metric: [(step, value), ...]} over every .wandb file of a run, oldest first."""
    points = {}
    for path in offline_run_files(wandb_dir, run_id):
        for step, row in read_offline_run(path).history:
            for key, value in row.items():
                if not key.startswith("_"):
                    points.setdefault(key, []).append((step, value))
    return points


def journal_points(out_dir):
    """{metric: {step: value}} as journaled (a re-run step keeps its last value)."""
    points = {}
    for record in read_journal(journal_path(out_dir)):
        if record["kind"] == "log":
            for key, value in record["metrics"].items():
                points.setdefault(key, {})[record["step"]] = value
    return points


def steps_of(rows):
    return [step for step, _ in rows]


def assert_each_step_once(points, expected):
    """Every metric of `expected` ({metric: {step: value}}) appears at each of
    its steps exactly once, with the expected value."""
    for key, by_step in expected.items():
        steps = steps_of(points.get(key, []))
        assert sorted(steps) == sorted(by_step), f"{key}: steps {sorted(steps)} != {sorted(by_step)}"
        for step, value in points[key]:
            assert value == pytest.approx(by_step[step], rel=1e-6), f"{key} at step {step}"


def own_env(env=None):
    """`env` (default: ours) for a child process that starts its own
    wandb-core: an in-process wandb run of an earlier test exports
    WANDB_SERVICE, and a child using that shared service would keep a
    killed run's id busy ("run ID is in use")."""
    return {key: value for key, value in (env or os.environ).items() if key != "WANDB_SERVICE"}


def replay(out_dir, *extra):
    return subprocess.run(
        [sys.executable, str(REPLAY), "--out-dir", str(out_dir), *extra],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env=own_env(),
    )


def blocked_package_env(tmp_path, *packages):
    """Environment whose PYTHONPATH shadows `packages` with modules that fail
    to import, as on a machine where they are not installed."""
    blocker = tmp_path / "blocked"
    blocker.mkdir(exist_ok=True)
    for package in packages:
        (blocker / f"{package}.py").write_text(f"raise ImportError(\"No module named '{package}'\")\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker), os.environ.get("PYTHONPATH", "")])}
