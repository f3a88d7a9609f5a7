"""Experiment tracking end to end: short real trainings of gpt2/train.py (tiny
model, CPU) with --tracker trackio / wandb / trackio,wandb, read back from
Trackio's SQLite database and W&B's offline run files and compared with the
run's journal and final metrics: every metric at its steps with its values,
the summary and the config; automatic names; kill -9 and --resume showing
each step once; a backend failing mid-run; a missing package.  W&B always
runs offline (conftest); Trackio and W&B write into per-test folders.

Run alone with `python tests/test_tracking.py` (or under pytest).
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tracking_support import (
    REPO_ROOT,
    SUMMARY_KEYS,
    TRAIN,
    TRAIN_METRICS,
    VAL_METRICS,
    WANDB_SYNC,
    assert_each_step_once,
    blocked_package_env,
    journal_points,
    own_env,
    replay,
    steps_of,
    trackio_rows,
    trackio_run_config,
    trackio_run_count,
    wandb_rows,
)

from lib.trackers.journal import journal_path, read_journal
from lib.trackers.naming import default_project_name
from lib.trackers.wandb_records import offline_run_files, read_offline_run


def tiny_train_args(data_dir, out_dir, tracker, *, max_iters=20, project="P", run_name="R"):
    return [
        sys.executable, str(TRAIN), "--device", "cpu", "--dtype", "float32", "--no-compile",
        "--dataset", "shakespeare", "--data-dir", str(data_dir),
        "--model", "custom", "--n-layer", "2", "--n-head", "2", "--n-embd", "32",
        "--block-size", "32", "--batch-size", "4", "--max-iters", str(max_iters),
        "--log-interval", "5", "--eval-interval", "10", "--eval-iters", "2",
        "--tracker", tracker, "--tracker-project", project, "--tracker-run-name", run_name,
        "--out-dir", str(out_dir), "--json-output", str(out_dir / "final.json"),
    ]  # fmt: skip


def train(args, cwd, env=None, timeout=300):
    return subprocess.run(args, check=False, capture_output=True, text=True, cwd=cwd, env=own_env(env), timeout=timeout)


def test_training_run_lands_in_both_backends(shakespeare_data, tmp_path):
    out = tmp_path / "out"
    result = train(tiny_train_args(shakespeare_data, out, "trackio,wandb"), cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    journaled = journal_points(out)
    assert sorted(journaled["train/loss"]) == [5, 10, 15, 20]
    assert sorted(journaled["val/loss"]) == [0, 10, 20]
    final = json.loads((out / "final.json").read_text())
    start = read_journal(journal_path(out))[0]

    db = Path(start["backends"]["trackio"]["trackio_dir"]) / "P.db"
    trackio_points = trackio_rows(db, "R")
    assert_each_step_once(trackio_points, {k: journaled[k] for k in (*TRAIN_METRICS, *VAL_METRICS)})
    for key in SUMMARY_KEYS:
        assert trackio_points[f"summary/{key}"] == [(20, pytest.approx(final[key]))]
    trackio_config = trackio_run_config(db, "R")

    wandb_state = start["backends"]["wandb"]
    wandb_points = wandb_rows(wandb_state["wandb_dir"], wandb_state["run_id"])
    assert_each_step_once(wandb_points, {k: journaled[k] for k in (*TRAIN_METRICS, *VAL_METRICS)})
    (run_file,) = offline_run_files(wandb_state["wandb_dir"], wandb_state["run_id"])
    wandb_run = read_offline_run(run_file)
    assert (wandb_run.project, wandb_run.name) == ("P", "R")
    for key in SUMMARY_KEYS:
        assert wandb_run.summary[key] == pytest.approx(final[key])

    for config in (trackio_config, wandb_run.config):
        assert config["max_iters"] == 20 and config["optimizer"] == start["config"]["optimizer"]
        assert config["tracker_project"] == "P" and config["tracker_run_name"] == "R"
        assert "dot_config" in config and config["git_commit"] == start["config"]["git_commit"]


def wait_for_step(out_dir, step, proc, timeout=120):
    """Block until the journal holds a log at `step` or later."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"training ended before step {step}: {proc.stderr.read()[-2000:]}")
        path = journal_path(out_dir)
        if path.exists() and any(r["kind"] == "log" and r["step"] >= step for r in read_journal(path)):
            return
        time.sleep(0.02)
    raise AssertionError(f"no step {step} within {timeout} s")


def with_flag(args, flag, value):
    """`args` with `flag` set to `value` (replaced where present, else appended)."""
    if flag in args:
        i = args.index(flag)
        return [*args[: i + 1], value, *args[i + 2 :]]
    return [*args, flag, value]


def test_kill_and_resume_shows_each_step_once(shakespeare_data, tmp_path):
    """kill -9 after the checkpoint of step 5, then --resume: the iterations
    after the checkpoint run again and W&B offline lost its buffered records
    in the kill; still every step is in both backends, once."""
    out = tmp_path / "out"
    args = with_flag(tiny_train_args(shakespeare_data, out, "trackio,wandb", max_iters=400), "--eval-interval", "5")
    proc = subprocess.Popen(
        args, cwd=REPO_ROOT, env=own_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_for_step(out, 10, proc)  # past the checkpoint of step 5
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()

    resumed = train([*with_flag(args, "--max-iters", "20"), "--resume"], cwd=REPO_ROOT)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    journaled = journal_points(out)
    assert max(journaled["train/loss"]) >= 20
    expected = {key: journaled[key] for key in (*TRAIN_METRICS, *VAL_METRICS)}
    starts = [r for r in read_journal(journal_path(out)) if r["kind"] == "start"]
    assert [s["resumed"] for s in starts] == [False, True] and starts[1]["run_name"] == "R"

    db = Path(starts[0]["backends"]["trackio"]["trackio_dir"]) / "P.db"
    assert trackio_run_count(db, "R") == 1
    wandb_state = starts[0]["backends"]["wandb"]
    assert starts[1]["backends"]["wandb"]["run_id"] == wandb_state["run_id"]
    for backend, points in (
        ("trackio", trackio_rows(db, "R")),
        ("wandb", wandb_rows(wandb_state["wandb_dir"], wandb_state["run_id"])),
    ):
        for key, by_step in expected.items():
            steps = steps_of(points[key])
            assert len(steps) == len(set(steps)), f"{backend} {key}: a step appears twice: {steps}"
            assert set(steps) == set(by_step), f"{backend} {key}: {sorted(steps)} != {sorted(by_step)}"

    # `make wandb-sync` on these folders: one `wandb sync` call with both
    # sessions, oldest first (what the installed wandb syncs into one run);
    # a session already synced (wandb's .wandb.synced marker) is skipped.
    files = offline_run_files(wandb_state["wandb_dir"], wandb_state["run_id"])
    folders = [path.parent for path in files]
    assert len(folders) == 2

    def sync_dry_run():
        command = [sys.executable, str(WANDB_SYNC), "--wandb-dir", wandb_state["wandb_dir"], "--dry-run"]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, env=own_env())
        assert result.returncode == 0, result.stderr
        return result

    listed = sync_dry_run()
    assert (f"wandb-sync: run {wandb_state['run_id']}: 2 sessions (resumed), synced in this order into that one "
            f"run: {folders[0].name}, {folders[1].name}") in listed.stdout.splitlines()  # fmt: skip
    assert f"wandb-sync: -m wandb sync --dry-run {folders[0]} {folders[1]}" in listed.stdout.splitlines()
    assert "Would sync 2 run(s)" in listed.stderr and all(path.name in listed.stderr for path in files)
    files[0].with_suffix(".wandb.synced").touch()
    again = sync_dry_run()
    assert "Would sync 1 run(s)" in again.stderr and "Skipped 1 synced run(s)" in again.stderr


SITECUSTOMIZE_LOCKED_DB = """
# Injected by tests/test_tracking.py: from step 10 on, Trackio's database
# refuses writes, as with "database is locked" or a full disk.
import sqlite3
from trackio.sqlite_storage import SQLiteStorage

_original = SQLiteStorage.bulk_log

def _bulk_log(**kwargs):
    if max(kwargs["steps"]) >= 10:
        raise sqlite3.OperationalError("database is locked")
    return _original(**kwargs)

SQLiteStorage.bulk_log = staticmethod(_bulk_log)
"""


def test_backend_failing_mid_training_warns_completes_and_replays(shakespeare_data, tmp_path):
    """Trackio's database refuses writes from step 10 on: one warning with the
    replay command, training completes, the replay restores every step once.
    Run from another folder with empty names, so the automatic names show."""
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(SITECUSTOMIZE_LOCKED_DB)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(inject), os.environ.get("PYTHONPATH", "")])}
    out = tmp_path / "out"
    args = tiny_train_args(shakespeare_data, out, "trackio", project="", run_name="")
    result = train(args, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: tracker trackio")]
    assert len(warnings) == 1, result.stderr[-3000:]
    assert f"python scripts/tracking/replay_journal.py --out-dir {out} --tracker trackio" in warnings[0]
    assert (out / "final.json").exists()  # training completed

    start = read_journal(journal_path(out))[0]
    assert start["project"] == default_project_name(tmp_path)
    assert re.fullmatch(r"gpt2-2l32d_[a-z]+_\d{8}-\d{6}", start["run_name"]), start["run_name"]
    db = Path(start["backends"]["trackio"]["trackio_dir"]) / f"{start['project']}.db"
    journaled = journal_points(out)
    assert len(trackio_rows(db, start["run_name"]).get("train/loss", [])) < 4  # points were lost

    fixed = replay(out)
    assert fixed.returncode == 0, fixed.stderr
    assert_each_step_once(
        trackio_rows(db, start["run_name"]), {k: journaled[k] for k in (*TRAIN_METRICS, *VAL_METRICS)}
    )
    assert trackio_run_config(db, start["run_name"])["tracker_project"] == start["project"]


def test_missing_package_is_one_line_before_training(shakespeare_data, tmp_path):
    out = tmp_path / "out"
    env = blocked_package_env(tmp_path, "trackio")
    result = train(tiny_train_args(shakespeare_data, out, "trackio,wandb"), cwd=REPO_ROOT, env=env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "error: tracker trackio is not available (No module named 'trackio'); install it with: pip install trackio"
    )
    assert "Traceback" not in result.stderr
    assert not re.search(r"^(eval|iter) \d+ \|", result.stdout + result.stderr, re.MULTILINE)  # no step ran
    assert not list(out.glob("*.pt")) and not journal_path(out).exists()
    assert not list(Path(os.environ["WANDB_DIR"]).rglob("*.wandb"))  # wandb was not left half-started


def test_out_dir_under_a_file_is_one_line_before_training(shakespeare_data, tmp_path):
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / "out"
    result = train(tiny_train_args(shakespeare_data, out, "wandb"), cwd=REPO_ROOT)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: --out-dir {out} cannot be written (Not a directory); choose a writable folder"
    )  # found by the out-dir's lock (gpt2/run/out_dir_lock.py), before anything else
    assert "Traceback" not in result.stderr
    assert not re.search(r"^(eval|iter) \d+ \|", result.stdout + result.stderr, re.MULTILINE)  # no step ran
    assert not list(Path(os.environ["WANDB_DIR"]).rglob("offline-run-*"))  # no W&B run was started


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, *sys.argv[1:]]))
