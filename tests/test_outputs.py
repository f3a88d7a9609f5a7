"""Where a run writes: every output path is checked before step 0; one run
per --out-dir at a time (gpt2/run/out_dir_lock.py), a lock that a crash never
leaves stale; two runs in different out-dirs logging to one Trackio
project both complete with every row."""

import json
import signal
import subprocess
import sys
from pathlib import Path

from tracking_support import journal_points, own_env, steps_of, trackio_rows
from train_support import TINY, shakespeare_flags

from gpt2.run.out_dir_lock import LOCK_NAME
from gpt2.train import main
from lib.trackers.journal import journal_path, read_journal

REPO_ROOT = Path(__file__).resolve().parent.parent


def tiny(shakespeare_data, shakespeare_path, out_dir, *flags):
    return [*TINY, *shakespeare_flags(shakespeare_data, shakespeare_path), "--out-dir", str(out_dir), *flags]


def test_json_output_folder_is_created_before_training(shakespeare_data, shakespeare_path, tmp_path):
    metrics = tmp_path / "results" / "deep" / "metrics.json"
    argv = tiny(shakespeare_data, shakespeare_path, tmp_path / "out", "--max-iters", "1", "--json-output", str(metrics))
    assert main(argv) == 0
    assert json.loads(metrics.read_text())["iterations"] == 1


def test_unwritable_json_output_fails_before_step_0(shakespeare_data, shakespeare_path, tmp_path, capsys):
    (tmp_path / "a-file").write_text("not a folder")
    metrics = tmp_path / "a-file" / "metrics.json"
    argv = tiny(shakespeare_data, shakespeare_path, tmp_path / "out", "--max-iters", "1", "--json-output", str(metrics))
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert captured.err == (
        f"error: --json-output {metrics}: cannot write into {metrics.parent} (a file, not a folder); "
        "give a file in a writable folder\n"
    )
    assert "iter" not in captured.out and "eval" not in captured.out
    assert not (tmp_path / "out").exists()  # nothing left behind, not even the out-dir


def hold_lock(out_dir):
    """A process holding the out-dir's lock, as a running training does."""
    code = (
        "import sys, time\n"
        "from gpt2.run.distributed import Distributed\n"
        "from gpt2.run.out_dir_lock import out_dir_lock\n"
        "with out_dir_lock(sys.argv[1], Distributed()):\n"
        "    print('locked', flush=True)\n"
        "    time.sleep(300)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(out_dir)], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "locked\n"
    return holder


def test_a_second_run_in_the_same_out_dir_refuses_in_one_line(shakespeare_data, shakespeare_path, tmp_path, capsys):
    out = tmp_path / "out"
    argv = tiny(shakespeare_data, shakespeare_path, out, "--max-iters", "2")
    holder = hold_lock(out)
    try:
        assert main(argv) == 1
        captured = capsys.readouterr()
        assert captured.err == (
            f"error: --out-dir {out} is in use by another training run (process {holder.pid}); "
            "wait for it to end, or give this run another --out-dir\n"
        )
        assert "iter" not in captured.out
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # nothing written by the refused run
    finally:
        holder.send_signal(signal.SIGKILL)  # a crash: the lock must not outlive it
        holder.wait()
    assert main(argv) == 0
    assert (out / "ckpt.pt").is_file()
    assert main([*argv, "--resume", "--max-iters", "3"]) == 0  # released at the end of the run before


def test_two_runs_into_one_trackio_project_both_complete(shakespeare_data, shakespeare_path, tmp_path):
    """Two trainings at once, different out-dirs, one Trackio project (one
    SQLite database): both finish, and each run holds every one of its rows."""
    runs = {name: tmp_path / name for name in ("first", "second")}
    procs = {
        name: subprocess.Popen(
            [sys.executable, "gpt2/train.py",
             *tiny(shakespeare_data, shakespeare_path, out, "--max-iters", "20", "--eval-interval", "10",
                   "--tracker", "trackio", "--tracker-project", "shared", "--tracker-run-name", name)],
            cwd=REPO_ROOT, env=own_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        for name, out in runs.items()
    }
    for name, proc in procs.items():
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"{name}: {err[-3000:]}"
        assert "locked" not in err and "warning" not in err, err
    for name, out in runs.items():
        start = read_journal(journal_path(out))[0]
        db = Path(start["backends"]["trackio"]["trackio_dir"]) / "shared.db"
        rows = trackio_rows(db, name)
        journaled = journal_points(out)
        assert steps_of(rows["train/loss"]) == list(range(1, 21)), name
        assert sorted(steps_of(rows["val/loss"])) == sorted(journaled["val/loss"]) == [0, 10, 20]
