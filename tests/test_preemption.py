"""SIGTERM, SIGUSR1 and SIGINT stop a run with a checkpoint at the step it
was in (gpt2/run/preemption.py): trackers closed, one line, exit 128 + signal;
--resume then repeats the uninterrupted run's losses, and Trackio and the
W&B offline run hold each step once.  The same under torchrun (gloo); and
a second signal during the save leaves a loadable checkpoint."""

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tracking_support import TRAIN_METRICS, VAL_METRICS, journal_points, own_env, steps_of, trackio_rows, wandb_rows
from train_support import TINY, shakespeare_flags

from gpt2.run.checkpoint import LATEST, load_checkpoint
from gpt2.run.trainer import Trainer
from gpt2.train import main
from lib.trackers.journal import journal_path, read_journal

REPO_ROOT = Path(__file__).resolve().parent.parent
# The schedule's length is fixed, so a first session may run longer (and be
# stopped anywhere) and a resumed one end at FINAL, as the uninterrupted run.
FINAL = 30
SCHEDULE = ["--lr-decay-iters", str(FINAL), "--eval-interval", "7", "--dropout", "0.1", "--seed", "5"]


def logged(text, kind):
    """{iteration: the rest of the line} of `iter N | ...` / `eval N | ...`
    console lines, timings cut off."""
    return {
        int(n): re.sub(r" \| [\d.]+ ms/iter.*", "", rest)
        for n, rest in re.findall(rf"^{kind} (\d+) \| (.*)$", text, re.M)
    }


def start(cmd, env=None):
    return subprocess.Popen(
        cmd, cwd=REPO_ROOT, env=own_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def signal_after(process, pattern, signum, pid=None):
    """Send `signum` (to `pid`, default the process) once a stdout line
    matches `pattern`; returns (stdout, stderr, exit status)."""
    seen = []
    for line in process.stdout:
        seen.append(line)
        if re.match(pattern, line):
            os.kill(pid or process.pid, signum)
            break
    out, err = process.communicate(timeout=300)
    return "".join(seen) + out, err, process.returncode


def stopped_at(stderr, name):
    (line,) = [line for line in stderr.splitlines() if line.startswith("stopped by")]
    match = re.fullmatch(rf"stopped by {name} at iter (\d+); the checkpoint (.+) holds that step: "
                         r"add --resume to the same command to continue \(exit status (\d+)\)", line)  # fmt: skip
    assert match, line
    return int(match[1])


def test_sigterm_checkpoints_the_current_step_and_resume_repeats_the_run(shakespeare_data, shakespeare_path, tmp_path):
    """SIGTERM mid-run: a checkpoint at that step, trackers closed, exit 143;
    --resume: the uninterrupted run's losses, each step once in Trackio and
    in the W&B offline run."""
    flags = [*TINY, *shakespeare_flags(shakespeare_data, shakespeare_path), *SCHEDULE]
    uninterrupted = subprocess.run(
        [sys.executable, "gpt2/train.py", *flags, "--out-dir", str(tmp_path / "a"), "--max-iters", str(FINAL)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert uninterrupted.returncode == 0, uninterrupted.stderr

    out = tmp_path / "b"
    tracked = [*flags, "--out-dir", str(out), "--tracker", "trackio,wandb", "--tracker-project", "P",
               "--tracker-run-name", "R", "--wandb-offline"]  # fmt: skip
    first = start([sys.executable, "gpt2/train.py", *tracked, "--max-iters", "1000"])
    before, err, status = signal_after(first, r"iter 9 \|", signal.SIGTERM)
    assert status == 143, err[-3000:]
    step = stopped_at(err, "SIGTERM")
    assert 9 <= step < FINAL and "Traceback" not in err
    assert load_checkpoint(out)["iter_num"] == step
    assert f"checkpoint {step} | written on SIGTERM" in before or step % 7 == 0
    records = read_journal(journal_path(out))
    assert records[-1]["kind"] == "finish" and records[-1]["failed"] == []  # trackers flushed and closed
    assert not [r for r in records if r["kind"] == "summary"]  # the run is not over

    resumed = subprocess.run(
        [sys.executable, "gpt2/train.py", *tracked, "--max-iters", str(FINAL), "--resume"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, env=own_env(),
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected = logged(uninterrupted.stdout, "iter")
    assert logged(before, "iter") == {i: expected[i] for i in logged(before, "iter")}
    after = logged(resumed.stdout, "iter")
    assert sorted(after) == list(range(step + 1, FINAL + 1))
    assert after == {i: expected[i] for i in after}
    assert logged(resumed.stdout, "eval") == {i: v for i, v in logged(uninterrupted.stdout, "eval").items() if i > step}

    journaled = journal_points(out)
    starts = [r for r in read_journal(journal_path(out)) if r["kind"] == "start"]
    db = Path(starts[0]["backends"]["trackio"]["trackio_dir"]) / "P.db"
    wandb_state = starts[0]["backends"]["wandb"]
    for backend, points in (
        ("trackio", trackio_rows(db, "R")),
        ("wandb", wandb_rows(wandb_state["wandb_dir"], wandb_state["run_id"])),
    ):
        for key in (*TRAIN_METRICS, *VAL_METRICS):
            steps = steps_of(points[key])
            assert sorted(steps) == sorted(journaled[key]), f"{backend} {key}: {steps}"
        assert steps_of(points["train/loss"]) == list(range(1, FINAL + 1)), backend


def test_sigterm_under_torchrun_stops_every_rank_at_one_step(shakespeare_data, shakespeare_path, tmp_path):
    """2 processes (gloo); SIGTERM to both workers, as SLURM signals every
    process of a job step: both stop at the same step, one checkpoint with
    both ranks' generators, exit 143; --resume repeats the uninterrupted run."""
    flags = [*TINY, *shakespeare_flags(shakespeare_data, shakespeare_path), *SCHEDULE,
             "--gradient-accumulation-steps", "2"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def torchrun(out, *extra):
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                "gpt2/train.py", *flags, "--out-dir", str(out), *extra]  # fmt: skip

    uninterrupted = subprocess.run(torchrun(tmp_path / "a", "--max-iters", str(FINAL)), cwd=REPO_ROOT,
                                   capture_output=True, text=True, timeout=300, env=env)  # fmt: skip
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]

    out = tmp_path / "b"
    agent = start(torchrun(out, "--max-iters", "1000"), env=env)
    seen = []
    for line in agent.stdout:
        seen.append(line)
        if re.match(r"iter 9 \|", line):
            workers = subprocess.run(["pgrep", "-P", str(agent.pid)], capture_output=True, text=True).stdout.split()
            assert len(workers) == 2, workers
            for pid in workers:
                os.kill(int(pid), signal.SIGTERM)
            break
    rest, err = agent.communicate(timeout=300)
    before = "".join(seen) + rest
    step = stopped_at(err, "SIGTERM")
    # Each worker exits 143; torchrun reports that as its workers' failure.
    assert agent.returncode == 1 and len(re.findall(r"exitcode\s*: 143 ", err)) == 2, err[-3000:]
    checkpoint = torch.load(out / LATEST, weights_only=True)
    assert checkpoint["iter_num"] == step and len(checkpoint["rng"]) == 2

    resumed = subprocess.run(torchrun(out, "--max-iters", str(FINAL), "--resume"), cwd=REPO_ROOT,
                             capture_output=True, text=True, timeout=300, env=env)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected = logged(uninterrupted.stdout, "iter")
    assert logged(before, "iter") == {i: expected[i] for i in logged(before, "iter")}
    after = logged(resumed.stdout, "iter")
    assert sorted(after) == list(range(step + 1, FINAL + 1)) and after == {i: expected[i] for i in after}


@pytest.fixture
def tiny_argv(shakespeare_data, shakespeare_path, tmp_path):
    return [*TINY, *shakespeare_flags(shakespeare_data, shakespeare_path), *SCHEDULE,
            "--out-dir", str(tmp_path / "out"), "--max-iters", "100"]  # fmt: skip


def signal_before_step(monkeypatch, signum, at):
    """Make train_step send `signum` to this process during step `at`."""
    real = Trainer.train_step

    def step(run, lr):
        if run.state.iter_num + 1 == at:
            os.kill(os.getpid(), signum)
        return real(run, lr)

    monkeypatch.setattr(Trainer, "train_step", step)


@pytest.mark.parametrize("name, status", [("SIGTERM", 143), ("SIGUSR1", 138), ("SIGINT", 130)])
def test_each_stop_signal_has_its_exit_status(tiny_argv, tmp_path, monkeypatch, capfd, name, status):
    signal_before_step(monkeypatch, getattr(signal, name), at=4)
    assert main(tiny_argv) == status
    captured = capfd.readouterr()
    assert stopped_at(captured.err, name) == 4
    assert f"{name} received: finishing this step" in captured.err
    assert load_checkpoint(tmp_path / "out")["iter_num"] == 4
    assert re.search(r"^iter 4 \|", captured.out, re.M) and not re.search(r"^iter 5 \|", captured.out, re.M)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handlers are given back


@pytest.mark.parametrize("second", ["SIGTERM", "SIGINT"])
def test_a_second_signal_during_the_save_leaves_a_loadable_checkpoint(tiny_argv, tmp_path, monkeypatch, capfd, second):
    signal_before_step(monkeypatch, signal.SIGTERM, at=3)
    real_save = torch.save
    saves = []

    def interrupted_save(state, f, *args, **kwargs):
        # Half the file is out when the second signal comes.
        f.write(b"PK" * 1000)
        f.seek(0)
        os.kill(os.getpid(), getattr(signal, second))
        saves.append(state["iter_num"])
        return real_save(state, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", interrupted_save)
    assert main(tiny_argv) == 143
    err = capfd.readouterr().err
    assert saves == [3]
    assert f"{second} received: already stopping; the checkpoint is being written" in err
    assert stopped_at(err, "SIGTERM") == 3
    assert load_checkpoint(tmp_path / "out")["iter_num"] == 3
    assert not list((tmp_path / "out").glob(".*.tmp"))

    # ... and it resumes.
    monkeypatch.undo()
    assert main([*tiny_argv, "--max-iters", "5", "--resume"]) == 0
    assert load_checkpoint(tmp_path / "out")["iter_num"] == 5
