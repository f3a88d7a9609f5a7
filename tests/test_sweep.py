"""`make sweep`: every point of a Kconfig grid trained for each seed, tagged
in the trackers, resumable after a SIGKILL without a step trained or tracked
twice, and every bad sweep refused in one line before anything trains."""

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lib.kconfig import REPO_ROOT

MAKE = ["make", "-s", "-C", str(REPO_ROOT), "-o", ".venv/.installed", f"PYTHON={sys.executable}"]
# The tiny model of tests/train_support.py, as Kconfig assignments.
TINY = ("N_LAYER=1 N_HEAD=2 N_EMBD=32 BLOCK_SIZE=32 BATCH_SIZE=4 EVAL_ITERS=2 WARMUP_ITERS=2 "
        "LOG_INTERVAL=1 CPU_MATMUL=blas")


def sweep_command(tmp_path, data_dir, corpus, vary, seeds=2, name="", extra=()):
    args = f"--data-input={corpus} --data-dir={data_dir} {' '.join(extra)}"
    return [*MAKE, "sweep", "BASE=gpt2-tiny-shakespeare", f"VARY={vary} {TINY}", f"SEEDS={seeds}",
            f"SWEEPS={tmp_path / 'sweeps'}", f"ARGS={args}", *([f"NAME={name}"] if name else [])]


def trackio_points(trackio_dir):
    """[(run_name, group, metric, step)] of every point in every Trackio database."""
    rows = []
    for db in Path(trackio_dir).glob("*.db"):
        with sqlite3.connect(db) as conn:
            groups = {run: json.loads(config).get("_Group") for run, config in
                      conn.execute("SELECT run_name, config FROM configs")}
            for run, step, metrics in conn.execute("SELECT run_name, step, metrics FROM metrics"):
                rows += [(run, groups.get(run), key, step) for key in json.loads(metrics)]
    return rows


@pytest.fixture
def corpus(shakespeare_path):
    return shakespeare_path


def test_sweep_trains_every_point_and_seed_and_groups_them(tmp_path, shakespeare_data, corpus):
    result = subprocess.run(sweep_command(tmp_path, shakespeare_data, corpus, "OPTIMIZER=adamw,adamwspam MAX_ITERS=4 "
                                          "EVAL_INTERVAL=2", name="opt"),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "sweeps" / "opt"
    runs = json.loads((folder / "sweep.json").read_text())["runs"]
    assert [(r["point"], r["seed"]) for r in runs] == [
        ("optimizer=adamw", 1337), ("optimizer=adamw", 1338), ("optimizer=adamwspam", 1337), ("optimizer=adamwspam", 1338)]
    for run in runs:
        metrics = json.loads((folder / run["dir"] / "metrics.json").read_text())
        assert metrics["iterations"] == 4
        assert (folder / run["dir"] / "command.sh").is_file()
    progress = [line for line in result.stdout.splitlines() if line.startswith("[")]
    assert len(progress) == 4 and "ETA" in progress[-1]
    points = trackio_points(os.environ["TRACKIO_DIR"])
    assert {run for run, *_ in points} == {f"{r['point']},seed={r['seed']}" for r in runs} | {"opt-report"}
    assert {group for _, group, *_ in points} == {"opt"}
    assert (folder / "report.md").is_file()
    # The report's table, as a sweep-level run beside the runs.
    summary = {key for run, _, key, _ in points if run == "opt-report"}
    assert {"summary/optimizer=adamw/best_val_loss_mean", "summary/optimizer=adamwspam/n"} <= summary


def test_sweep_survives_sigkill_without_training_or_tracking_twice(tmp_path, shakespeare_data, corpus):
    command = sweep_command(tmp_path, shakespeare_data, corpus, "OPTIMIZER=adamw,sgd MAX_ITERS=30 EVAL_INTERVAL=10",
                            name="kill")
    driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    second_log = tmp_path / "sweeps" / "kill" / "optimizer=adamw" / "seed-1338" / "train.log"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and "iter 12 " not in (second_log.read_text() if second_log.exists() else ""):
        time.sleep(0.1)
    assert "iter 12 " in second_log.read_text(), "the second run never got past its first checkpoint"
    os.killpg(driver.pid, signal.SIGKILL)  # make, the driver and the training: as a reboot would
    driver.wait()
    time.sleep(0.5)
    assert not (second_log.parent / "metrics.json").exists()

    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "1 of 4 runs already finished" in result.stdout
    assert "resuming from" in second_log.read_text()
    points = [point for point in trackio_points(os.environ["TRACKIO_DIR"]) if point[0] != "kill-report"]
    assert len({run for run, *_ in points}) == 4
    assert len(points) == len(set(points)), "a (run, metric, step) point was tracked twice"
    steps = sorted(step for run, _, key, step in points if run == "optimizer=adamw,seed=1338" and key == "train/loss")
    assert steps == list(range(1, 31))


def test_one_point_one_seed_is_just_a_run(tmp_path, shakespeare_data, corpus):
    result = subprocess.run(sweep_command(tmp_path, shakespeare_data, corpus, "MAX_ITERS=2 EVAL_INTERVAL=2 TRACKER=none",
                                          seeds=1, name="single"),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "sweeps" / "single" / "base" / "seed-1337" / "metrics.json").is_file()


@pytest.mark.parametrize("vary, message", [
    ("OPTIMIZERS=adamw,sgd", "VARY: unknown option OPTIMIZERS; "),
    ("N_LAYER=1,1000", "VARY: N_LAYER=1000 is outside [1, 128]"),
    ("OPTIMIZER=adamw,lion", "VARY: OPTIMIZER='lion' is not one of: sgd, adam, adamw"),
    ("OPTIMIZER=", "VARY: an empty value in ''"),
    ("OPTIMIZER=adamw,,sgd", "VARY: an empty value in 'adamw,,sgd'"),
    ("SPAM_THETA=10,20", "VARY: SPAM_THETA has no effect at this point of the sweep (spam_theta=10): it depends on "
                         "OPTIMIZER_ADAMWSPAM"),
])
def test_bad_sweep_is_one_line_and_starts_nothing(vary, message, tmp_path):
    result = subprocess.run([sys.executable, "-m", "scripts.experiments.sweep", "--root", str(tmp_path), "--name", "bad",
                             "--base", "gpt2-tiny-shakespeare", "--vary", vary],
                            cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(f"error: {message}"), result.stderr
    assert not (tmp_path / "bad").exists()


def test_sweep_file_errors_name_the_file_and_line(tmp_path):
    sweep_file = tmp_path / "mine.sweep"
    sweep_file.write_text("BASE=gpt2-tiny-shakespeare\n# a comment\nOPTIMIZER=adamw,sgd\nMAX_ITERS=0\n")
    result = subprocess.run([sys.executable, "-m", "scripts.experiments.sweep", "--root", str(tmp_path), "--file", str(sweep_file)],
                            cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr == f"error: {sweep_file}:4: MAX_ITERS=0 is outside [1, 1000000000]\n"
    missing = subprocess.run([sys.executable, "-m", "scripts.experiments.sweep", "--file", str(tmp_path / "none.sweep")],
                             cwd=REPO_ROOT, capture_output=True, text=True)
    assert missing.returncode == 1 and "none.sweep: no such sweep file" in missing.stderr


def test_same_name_with_another_grid_is_refused(tmp_path):
    base = [sys.executable, "-m", "scripts.experiments.sweep", "--root", str(tmp_path), "--name", "same",
            "--base", "gpt2-tiny-shakespeare", "--no-report"]
    from scripts.experiments import sweep

    sweep.plan(sweep.parse_command_line("gpt2-tiny-shakespeare", "OPTIMIZER=adamw,sgd", "1", "same"), tmp_path, [])
    result = subprocess.run([*base, "--vary", "OPTIMIZER=adamw,adam"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 1
    assert "holds sweep 'same' with another grid" in result.stderr and "choose another NAME=" in result.stderr


def test_array_tasks_make_the_same_folders_as_make_sweep(tmp_path, shakespeare_data, corpus):
    """A scheduler's array runs `--only N` for each run: each task plans the
    same sweep (same folders) and trains its run alone; the report then
    covers them all, as after `make sweep`."""
    base = [sys.executable, "-m", "scripts.experiments.sweep", "--root", str(tmp_path), "--name", "array",
            "--base", "gpt2-tiny-shakespeare", "--vary", f"MAX_ITERS=2 EVAL_INTERVAL=2 TRACKER=none {TINY}",
            "--seeds", "2", "--", f"--data-input={corpus}", f"--data-dir={shakespeare_data}"]
    first = subprocess.run([*base[:-3], "--only", "1", *base[-3:]], cwd=REPO_ROOT, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    folder = tmp_path / "array" / "base"
    assert (folder / "seed-1338" / "metrics.json").is_file() and not (folder / "seed-1337" / "metrics.json").exists()
    second = subprocess.run([*base[:-3], "--only", "0", *base[-3:]], cwd=REPO_ROOT, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr
    report = subprocess.run([sys.executable, "-m", "scripts.experiments.report", "--sweep", str(tmp_path / "array")],
                            cwd=REPO_ROOT, capture_output=True, text=True)
    assert report.returncode == 0, report.stderr
    assert "(n=2)" in (tmp_path / "array" / "report.md").read_text()


def test_jobs_share_the_cpu_or_take_one_gpu_each(monkeypatch):
    from scripts.experiments import sweep

    monkeypatch.setattr(sweep, "_gpu_count", lambda: 0)
    monkeypatch.setattr(sweep.os, "cpu_count", lambda: 8)
    assert sweep.job_environments(1) == [{}]
    assert sweep.job_environments(2) == [{"OMP_NUM_THREADS": "4"}] * 2
    monkeypatch.setattr(sweep, "_gpu_count", lambda: 4)
    assert sweep.job_environments(4) == [{"CUDA_VISIBLE_DEVICES": str(i)} for i in range(4)]


def test_two_jobs_run_at_once(tmp_path, shakespeare_data, corpus):
    command = [sys.executable, "-m", "scripts.experiments.sweep", "--root", str(tmp_path), "--name", "jobs", "--jobs", "2",
               "--no-report", "--base", "gpt2-tiny-shakespeare", "--vary",
               f"OPTIMIZER=adamw,sgd MAX_ITERS=2 EVAL_INTERVAL=2 TRACKER=none {TINY}",
               "--", f"--data-input={corpus}", f"--data-dir={shakespeare_data}"]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    folders = sorted((tmp_path / "jobs").glob("*/seed-1337"))
    assert [folder.parent.name for folder in folders] == ["optimizer=adamw", "optimizer=sgd"]
    assert all((folder / "metrics.json").is_file() for folder in folders)
    progress = [line for line in result.stdout.splitlines() if line.startswith("[")]
    assert [line[:5] for line in progress] == ["[1/2]", "[2/2]"]
    durations = [float(re.search(r" in ([\d.]+) s \|", line).group(1)) for line in progress]
    elapsed = float(re.search(r"elapsed (\d+) s", progress[-1]).group(1))
    assert elapsed < sum(durations) - 1, "the two runs did not overlap"
