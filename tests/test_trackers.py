"""lib.trackers against the real backends, without training: names, parsing,
the journal, the run config, each backend's stored metrics, summary and config
(Trackio's SQLite database, W&B's offline run files), resume, a backend
failing mid-run and the replay that restores it, wandb sync.

The end-to-end runs of gpt2/train.py are tests/test_tracking.py.
Run alone with `python tests/test_trackers.py` (or under pytest).
"""

import datetime
import hashlib
import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tracking_support import (
    WANDB_SYNC,
    assert_each_step_once,
    blocked_package_env,
    replay,
    steps_of,
    trackio_rows,
    trackio_run_config,
    trackio_run_count,
    tracking,
    wandb_rows,
)

from lib.trackers import TrackerError, null_trackers, open_trackers, parse_tracker_names, registry
from lib.trackers.journal import journal_path, read_journal
from lib.trackers.naming import default_project_name, default_run_name
from lib.trackers.run_info import REDACTED
from lib.trackers.trackio_tracker import stored_points
from lib.trackers.wandb_records import CHUNK_HEADER, FULL, HEADER, offline_run_files, read_offline_run
from lib.trackers.wandb_tracker import read_run_file
from scripts.tracking import trackio_show


def test_tracker_names_are_parsed_deduplicated_and_checked():
    assert parse_tracker_names("trackio,wandb,trackio") == ["trackio", "wandb"]
    assert parse_tracker_names(" Wandb ") == ["wandb"]
    assert parse_tracker_names("none") == []
    assert parse_tracker_names("") == []
    with pytest.raises(TrackerError, match=rf"unknown tracker 'tensorboard'; choose none, {', '.join(registry.backend_names())}"):
        parse_tracker_names("trackio,tensorboard")
    with pytest.raises(TrackerError, match="'none' cannot be combined"):
        parse_tracker_names("none,trackio")


def test_default_project_name_is_folder_plus_md5_of_its_path(tmp_path):
    folder = tmp_path / "gpt2lab"
    folder.mkdir()
    digest = hashlib.md5(str(folder.resolve()).encode()).hexdigest()[:8]
    assert default_project_name(folder) == f"gpt2lab-{digest}"
    other = tmp_path / "x" / "gpt2lab"
    other.mkdir(parents=True)
    assert default_project_name(other) != default_project_name(folder)


def test_default_run_name_is_model_optimizer_time():
    now = datetime.datetime(2026, 11, 25, 14, 15, 3)
    assert default_run_name({"model": "gpt2", "optimizer": "adamwspam"}, now) == "gpt2_adamwspam_20261125-141503"
    custom = {"model": "custom", "n_layer": 4, "n_embd": 128, "optimizer": "adamw"}
    assert default_run_name(custom, now) == "gpt2-4l128d_adamw_20261125-141503"


def test_null_trackers_accept_everything_and_write_nothing(tmp_path):
    trackers = null_trackers()
    trackers.log({"train/loss": 1.0}, step=1)
    trackers.summary({"best_val_loss": 1.0})
    assert trackers.names == [] and trackers.state_dict()["backends"] == {}
    trackers.finish()


def test_none_journals_every_record_and_imports_no_backend(tmp_path):
    """--tracker none still journals (replayable later) and never imports
    trackio or wandb; a tensor is refused (it would sync the device)."""
    code = (
        "import sys, torch\n"
        "from lib.trackers import TrackingConfig, open_trackers\n"
        "tracking = TrackingConfig('none', 'p', 'r', '')\n"
        f"t = open_trackers(tracking, config={{'seed': 1}}, out_dir={str(tmp_path)!r})\n"
        "t.log({'train/loss': 2.5}, step=5)\n"
        "t.summary({'best_val_loss': 2.0, 'final_val_loss': None})\n"
        "try:\n"
        "    t.log({'train/loss': torch.tensor(1.0)}, step=6)\n"
        "except TypeError as e:\n"
        "    print('refused:', e)\n"
        "t.finish()\n"
        "print('imported:', sorted(m for m in ('trackio', 'wandb') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "imported: []" in result.stdout
    assert "refused: metric 'train/loss' is a Tensor" in result.stdout
    kinds = [(r["kind"], r.get("step")) for r in read_journal(journal_path(tmp_path))]
    assert kinds == [("start", None), ("log", 5), ("summary", 5), ("finish", 5)]
    summary = read_journal(journal_path(tmp_path))[2]["metrics"]
    assert summary == {"best_val_loss": 2.0}  # None values are left out


def test_journal_skips_a_last_line_cut_by_a_kill_and_names_a_damaged_one(tmp_path):
    path = journal_path(tmp_path)
    path.write_text('{"kind": "log", "step": 5, "metrics": {"train/loss": 2.0}}\n{"kind": "log", "st')
    assert read_journal(path) == [{"kind": "log", "step": 5, "metrics": {"train/loss": 2.0}}]
    path.write_text('{"kind": "log", "st\n{"kind": "finish", "step": 5, "failed": []}\n')
    with pytest.raises(ValueError, match=r"tracking.jsonl:1: not a JSON record"):
        read_journal(path)


def test_bad_out_dir_or_damaged_journal_stops_before_any_backend_starts(tmp_path, monkeypatch):
    def no_backend(name):
        raise AssertionError(f"backend {name} started")

    monkeypatch.setattr(registry, "backend_class", no_backend)
    (tmp_path / "file").write_text("x")
    for out_dir in (tmp_path / "file", tmp_path / "file" / "out"):  # FileExistsError, NotADirectoryError
        with pytest.raises(TrackerError) as error:
            open_trackers(tracking("trackio", project="p", run_name="r"), config={}, out_dir=out_dir)
        message = str(error.value)
        assert len(message.splitlines()) == 1
        assert message.startswith(f"cannot write {journal_path(out_dir)} (")
        assert message.endswith("); choose a writable --out-dir")

    journal_path(tmp_path).write_text('{"kind": "log", "st\n{"kind": "finish", "step": 5, "failed": []}\n')
    with pytest.raises(TrackerError, match=r"tracking.jsonl:1: not a JSON record; .*move it away"):
        open_trackers(tracking("trackio", project="p", run_name="r"), config={}, out_dir=tmp_path, resume_state={})


def test_run_config_holds_settings_dot_config_git_and_redacts_secrets(tmp_path, monkeypatch):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "f.txt").write_text("x\n")
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "add", "f.txt"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "init"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], check=False, capture_output=True, text=True).stdout.strip()
    (tmp_path / ".config").write_text('CONFIG_MAX_ITERS=20\nCONFIG_HF_TOKEN="hf_secret"\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_API_KEY", "key-that-must-not-leak")

    trackers = open_trackers(
        tracking("none"), config={"max_iters": 20, "wandb_api_key": "x"}, out_dir=tmp_path / "out"
    )
    trackers.finish()
    start = read_journal(journal_path(tmp_path / "out"))[0]
    config = start["config"]
    assert config["max_iters"] == 20 and config["wandb_api_key"] == REDACTED
    assert config["dot_config"] == f'CONFIG_MAX_ITERS=20\nCONFIG_HF_TOKEN="{REDACTED}"\n'
    assert config["git_commit"] == head
    assert config["git_dirty"] is True  # .config and out/ are untracked
    assert start["project"] == config["tracker_project"] == default_project_name(tmp_path)
    assert re.fullmatch(r"gpt2_opt_\d{8}-\d{6}", start["run_name"])
    assert "key-that-must-not-leak" not in journal_path(tmp_path / "out").read_text()


def log_fake_run(trackers, steps):
    """Log train metrics at `steps`, val metrics every 10, like the loop."""
    for step in steps:
        if step % 10 == 0:
            trackers.log({"val/loss": 5.0 - step / 100, "val/perplexity": 150.0 - step}, step=step)
        if step % 5 == 0 and step > 0:
            trackers.log({"train/loss": 6.0 - step / 50, "train/lr": 1e-3 * step / 20}, step=step)


def expected_points(steps):
    points = {}
    for step in steps:
        if step % 10 == 0:
            points.setdefault("val/loss", {})[step] = 5.0 - step / 100
            points.setdefault("val/perplexity", {})[step] = 150.0 - step
        if step % 5 == 0 and step > 0:
            points.setdefault("train/loss", {})[step] = 6.0 - step / 50
            points.setdefault("train/lr", {})[step] = 1e-3 * step / 20
    return points


def trackio_db(trackers):
    state = trackers.state_dict()["backends"]["trackio"]
    return Path(state["trackio_dir"]) / f"{trackers.project}.db"


def test_trackio_stores_metrics_summary_and_config_in_sqlite(tmp_path):
    project = f"t-{tmp_path.name}"
    trackers = open_trackers(tracking("trackio", project=project, run_name="run1"), config={"seed": 7}, out_dir=tmp_path)
    log_fake_run(trackers, range(21))
    trackers.summary({"best_val_loss": 4.8, "tokens_seen": 1280})
    trackers.finish()

    points = trackio_rows(trackio_db(trackers), "run1")
    assert_each_step_once(points, expected_points(range(21)))
    assert points["summary/best_val_loss"] == [(20, 4.8)] and points["summary/tokens_seen"] == [(20, 1280)]
    config = trackio_run_config(trackio_db(trackers), "run1")
    assert config["seed"] == 7 and config["tracker_project"] == project and config["tracker_run_name"] == "run1"
    assert {"dot_config", "git_commit", "git_dirty"} <= set(config)


def test_wandb_offline_file_holds_metrics_summary_config_and_no_key(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "local-0123456789abcdef0123456789abcdef01234567")
    trackers = open_trackers(tracking("wandb", project="p", run_name="run1"), config={"seed": 7}, out_dir=tmp_path / "out")
    log_fake_run(trackers, range(21))
    trackers.summary({"best_val_loss": 4.8, "tokens_seen": 1280})
    state = trackers.state_dict()["backends"]["wandb"]
    trackers.finish()

    assert state["mode"] == "offline"
    (run_file,) = offline_run_files(state["wandb_dir"], state["run_id"])
    run = read_offline_run(run_file)
    assert (run.project, run.name) == ("p", "run1")
    assert_each_step_once(wandb_rows(state["wandb_dir"], state["run_id"]), expected_points(range(21)))
    assert run.summary["best_val_loss"] == 4.8 and run.summary["tokens_seen"] == 1280
    assert run.config["seed"] == 7 and run.config["tracker_run_name"] == "run1" and "git_commit" in run.config
    for folder in (Path(state["wandb_dir"]), tmp_path / "out"):
        for path in folder.rglob("*"):
            if path.is_file():
                assert b"0123456789abcdef0123456789abcdef" not in path.read_bytes(), path


def test_wandb_online_without_a_key_fails_before_training_with_the_fix(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(TrackerError, match=r"no API key; run `wandb login`, or set WANDB_MODE=offline"):
        open_trackers(tracking("wandb", project="p", run_name="r"), config={}, out_dir=tmp_path)
    assert not journal_path(tmp_path).exists()  # nothing half-written


def test_resume_reattaches_and_logs_each_step_once(tmp_path):
    """A restart re-runs the iterations after the last checkpoint: points the
    backends already hold are dropped, so every step appears once."""
    common = dict(config={"model": "gpt2", "optimizer": "sgd"}, out_dir=tmp_path)
    both = tracking("trackio,wandb", project=f"r-{tmp_path.name}")
    first = open_trackers(both, **common)
    log_fake_run(first, range(16))  # "killed" at step 15 ...
    state = first.state_dict()  # ... the checkpoint holds the tracker state
    first.finish()

    second = open_trackers(both, **common, resume_state=state)
    assert second.run_name == first.run_name
    log_fake_run(second, range(10, 31))  # ... restart from the checkpoint of step 10
    second.summary({"best_val_loss": 4.7})
    second.finish()

    expected = expected_points(range(31))
    assert_each_step_once(trackio_rows(trackio_db(second), second.run_name), expected)
    assert trackio_run_count(trackio_db(second), second.run_name) == 1
    wandb_state = second.state_dict()["backends"]["wandb"]
    assert wandb_state["run_id"] == state["backends"]["wandb"]["run_id"]
    assert_each_step_once(wandb_rows(wandb_state["wandb_dir"], wandb_state["run_id"]), expected)


def test_backend_raising_mid_run_warns_once_and_replay_restores_it(tmp_path, monkeypatch, capsys):
    import trackio.run

    original, calls = trackio.run.Run.log, []

    def fails_after_four(self, metrics, step=None):
        calls.append(step)
        if len(calls) > 4:
            raise OSError(28, "No space left on device")
        return original(self, metrics, step)

    monkeypatch.setattr(trackio.run.Run, "log", fails_after_four)
    trackers = open_trackers(tracking("trackio", project=f"f-{tmp_path.name}", run_name="r"), config={}, out_dir=tmp_path)
    log_fake_run(trackers, range(31))
    trackers.summary({"best_val_loss": 4.7})
    trackers.finish()
    monkeypatch.undo()

    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: tracker")]
    assert len(warnings) == 1
    assert "tracker trackio failed in log() at step" in warnings[0] and "No space left on device" in warnings[0]
    assert f"python scripts/tracking/replay_journal.py --out-dir {tmp_path} --tracker trackio" in warnings[0]
    assert trackers.failed.keys() == {"trackio"}

    db = trackio_db(trackers)
    assert len(steps_of(trackio_rows(db, "r")["train/loss"])) < 6  # the run really lost points
    result = replay(tmp_path)
    assert result.returncode == 0, result.stderr
    assert "replay: trackio run r of project" in result.stdout
    points = trackio_rows(db, "r")
    assert_each_step_once(points, expected_points(range(31)))
    assert points["summary/best_val_loss"] == [(30, 4.7)]
    again = replay(tmp_path, "--tracker", "trackio")
    assert "added 0 points" in again.stdout  # nothing twice


def test_lost_trackio_writes_are_detected_at_finish_and_replayed(tmp_path, monkeypatch, capsys):
    """Trackio swallows write errors in its background thread ("database is
    locked"): finish() reads the database back, notices the gap, warns once."""
    from trackio.sqlite_storage import SQLiteStorage

    original = SQLiteStorage.bulk_log

    def locked_from_step_12(**kwargs):
        if max(kwargs["steps"]) >= 12:
            raise sqlite3.OperationalError("database is locked")
        return original(**kwargs)

    monkeypatch.setattr(SQLiteStorage, "bulk_log", staticmethod(locked_from_step_12))
    trackers = open_trackers(tracking("trackio", project=f"l-{tmp_path.name}", run_name="r"), config={}, out_dir=tmp_path)
    for step in range(31):
        log_fake_run(trackers, [step])
        if step == 10:
            time.sleep(0.8)  # let Trackio's writer (every 0.5 s) store the first steps
    with pytest.warns(UserWarning, match="database is locked"):
        trackers.finish()
    monkeypatch.undo()

    err = capsys.readouterr().err
    assert err.count("warning: tracker trackio failed in finish()") == 1
    assert "the others were lost" in err
    result = replay(tmp_path)
    assert result.returncode == 0, result.stderr
    assert_each_step_once(trackio_rows(trackio_db(trackers), "r"), expected_points(range(31)))


def test_wandb_replay_appends_the_steps_after_a_failure(tmp_path, monkeypatch, capsys):
    """W&B history only grows, so replay appends the steps after the last one
    the run holds (here the failure hits the first call of step 15)."""
    import wandb.sdk.wandb_run

    original, calls = wandb.sdk.wandb_run.Run.log, []

    def service_gone_after_four(self, data, step=None, **kwargs):
        calls.append(step)
        if len(calls) > 4:
            raise ConnectionResetError("wandb-core is gone")
        return original(self, data, step=step, **kwargs)

    monkeypatch.setattr(wandb.sdk.wandb_run.Run, "log", service_gone_after_four)
    trackers = open_trackers(tracking("wandb", project="p", run_name="r"), config={}, out_dir=tmp_path)
    log_fake_run(trackers, range(31))
    state = trackers.state_dict()["backends"]["wandb"]
    trackers.finish()
    monkeypatch.undo()
    assert "tracker wandb failed in log()" in capsys.readouterr().err

    result = replay(tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(offline_run_files(state["wandb_dir"], state["run_id"])) == 2  # resumed once, same id
    assert_each_step_once(wandb_rows(state["wandb_dir"], state["run_id"]), expected_points(range(31)))


def test_damaged_trackio_database_or_wandb_file_is_one_line_naming_it(tmp_path):
    garbage = tmp_path / "p.db"
    garbage.write_bytes(b"not a database " * 100)
    with pytest.raises(TrackerError) as error:
        stored_points(garbage, "run-id")
    assert str(error.value).startswith(f"cannot read the Trackio database {garbage} (file is not a database)")
    assert len(str(error.value).splitlines()) == 1

    run_file = tmp_path / "offline-run-20260101_000000-abc" / "run-abc.wandb"
    run_file.parent.mkdir()
    for content in (b"garbage", HEADER + b"\xe1\xbe\x00" + CHUNK_HEADER.pack(0, 5, FULL) + b"\xff" * 5):
        run_file.write_bytes(content)
        with pytest.raises(TrackerError, match=rf"^tracker wandb: {re.escape(str(run_file))}: .*; move its folder"):
            read_run_file(run_file)


def test_trackio_gpu_metrics_is_off_unless_asked(tmp_path, monkeypatch):
    """TRACKIO_GPU_METRICS decides Trackio's own GPU poller (auto_log_gpu):
    off by default (Trackio would turn it on by itself on a GPU machine), on
    with --trackio-gpu-metrics, and kept in the state a replay reopens."""
    import trackio

    asked = []
    real_init = trackio.init
    monkeypatch.setattr(trackio, "init", lambda **kw: asked.append(kw["auto_log_gpu"]) or real_init(**kw))
    states = []
    for extra in ((), ("--trackio-gpu-metrics",)):
        trackers = open_trackers(tracking("trackio", project=f"gpu-{tmp_path.name}", run_name=f"r{len(asked)}",
                                          extra=extra), config={}, out_dir=tmp_path / f"out{len(asked)}")
        states.append(trackers.state_dict()["backends"]["trackio"])
        trackers.finish()
    assert asked == [False, True]
    assert [registry.backend_class("trackio").settings_from_state(s).trackio_gpu_metrics for s in states] == [
        False, True]


def test_trackio_show_uses_the_trackio_dir_training_uses(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    settings = {"TRACKER_PROJECT": "p", "TRACKIO_PORT": 7860, "TRACKIO_DIR": "~/tio"}
    _, env = trackio_show.dashboard(settings)
    assert env["TRACKIO_DIR"] == str((tmp_path / "tio").resolve())


def test_wandb_sync_script_reports_what_it_would_do(tmp_path):
    env = {**os.environ, "WANDB_DIR": str(tmp_path)}
    empty = subprocess.run(
        [sys.executable, str(WANDB_SYNC)], check=False, capture_output=True, text=True, env=env, timeout=120
    )
    assert empty.returncode == 0 and empty.stdout.strip() == f"wandb-sync: no offline runs in {tmp_path / 'wandb'}"

    trackers = open_trackers(tracking("wandb", project="p", run_name="r"), config={}, out_dir=tmp_path / "out")
    trackers.log({"train/loss": 1.0}, step=1)
    state = trackers.state_dict()["backends"]["wandb"]
    trackers.finish()
    # (wandb keeps its first WANDB_DIR for the whole process: other tests' runs may be there too)
    sync = [sys.executable, str(WANDB_SYNC), "--wandb-dir", state["wandb_dir"]]
    listed = subprocess.run([*sync, "--dry-run"], check=False, capture_output=True, text=True, env=env, timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert re.search(
        rf"wandb-sync: listing \d+ offline run folder\(s\) from {re.escape(state['wandb_dir'])}", listed.stdout
    )
    assert f"run-{state['run_id']}.wandb" in listed.stderr  # wandb sync --dry-run names it
    no_key = {**env, "HOME": str(tmp_path), "NETRC": str(tmp_path / "none")}
    no_key.pop("WANDB_API_KEY", None)
    refused = subprocess.run(sync, check=False, capture_output=True, text=True, env=no_key, timeout=120)
    assert refused.returncode == 1
    assert refused.stderr.strip() == "error: no W&B API key; run `wandb login` (or set WANDB_API_KEY) first"


def test_wandb_sync_without_wandb_is_one_line(tmp_path):
    env = blocked_package_env(tmp_path, "wandb")
    nothing = subprocess.run(
        [sys.executable, str(WANDB_SYNC), "--wandb-dir", str(tmp_path / "wandb")],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert nothing.returncode == 0  # nothing to upload needs no wandb
    assert nothing.stdout.strip() == f"wandb-sync: no offline runs in {tmp_path / 'wandb'}"
    (tmp_path / "wandb" / "offline-run-20260101_000000-abc").mkdir(parents=True)
    result = subprocess.run(
        [sys.executable, str(WANDB_SYNC), "--wandb-dir", str(tmp_path / "wandb")],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == "error: wandb is not installed; install it with: pip install wandb"


def test_missing_wandb_is_one_line(tmp_path):
    code = (
        "from lib.trackers import TrackingConfig, open_trackers\n"
        "from lib.trackers.wandb_tracker import Config\n"
        "open_trackers(TrackingConfig('wandb', 'p', 'r', '', {'wandb': Config('', False)}), config={}, out_dir='')"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        capture_output=True,
        text=True,
        env=blocked_package_env(tmp_path, "wandb"),
        timeout=60,
    )
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .endswith(
            "TrackerError: tracker wandb is not available (No module named 'wandb'); install it with: pip install wandb"
        )
    )


def test_group_reaches_both_backends_and_survives_a_resume(tmp_path):
    """--tracker-group (a sweep's name) is the run's group in Trackio and W&B,
    kept when the run is resumed."""
    grouped = tracking("trackio,wandb", project=f"g-{tmp_path.name}", run_name="grouped",
                       extra=("--tracker-group", "sweep-a"))
    first = open_trackers(grouped, config={}, out_dir=tmp_path)
    first.log({"train/loss": 1.0}, step=1)
    state = first.state_dict()
    first.finish()
    second = open_trackers(tracking("trackio,wandb", project=f"g-{tmp_path.name}"), config={}, out_dir=tmp_path,
                           resume_state=state)
    second.log({"train/loss": 0.5}, step=2)
    second.finish()
    assert state["group"] == second.state_dict()["group"] == "sweep-a"
    db = Path(state["backends"]["trackio"]["trackio_dir"]) / f"{state['project']}.db"
    assert trackio_run_config(db, "grouped")["_Group"] == "sweep-a"
    wandb_state = state["backends"]["wandb"]
    files = offline_run_files(wandb_state["wandb_dir"], wandb_state["run_id"])
    assert len(files) == 2 and {read_offline_run(path).group for path in files} == {"sweep-a"}


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, *sys.argv[1:]]))
