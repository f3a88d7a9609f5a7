"""A run killed with SIGKILL and resumed gives the same losses as one that was
never interrupted; checkpoint files are replaced atomically."""

import os
import re
import signal
import subprocess
import sys

import pytest
import torch

from gpt2.run.checkpoint import LATEST, load_checkpoint, save_checkpoint
from gpt2.errors import UsageError
from gpt2.train import main
from train_support import TINY, shakespeare_flags

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def logged(text, kind):
    """{iteration: the rest of the line} for console lines `iter N | ...`
    (kind "iter") or `eval N | ...` (kind "eval"), timings cut off."""
    return {
        int(n): re.sub(r" \| [\d.]+ ms/iter.*", "", rest)
        for n, rest in re.findall(rf"^{kind} (\d+) \| (.*)$", text, re.M)
    }


def command(data_dir, input_path, out_dir, *flags):
    """gpt2/train.py as a user runs it: deterministic on CPU in float32, with
    dropout on so the restored RNG state matters too."""
    return [
        sys.executable, "gpt2/train.py", *TINY, *shakespeare_flags(data_dir, input_path),
        "--out-dir", str(out_dir), "--max-iters", "16", "--eval-interval", "6",
        "--dropout", "0.1", "--seed", "7", *flags,
    ]  # fmt: skip


def run_to_end(cmd):
    result = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout


def run_until_first_checkpoint_then_kill(cmd):
    """Start the run, SIGKILL it once the first checkpoint is on disk (its
    eval line is printed after the file is written); returns its output."""
    process = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    seen = []
    try:
        for line in process.stdout:
            seen.append(line)
            if re.match(r"eval [1-9]\d* \|", line):
                process.send_signal(signal.SIGKILL)
                break
    finally:
        process.kill()
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, "".join(seen)
    return "".join(seen)


def test_killed_and_resumed_run_repeats_the_uninterrupted_losses(shakespeare_data, shakespeare_path, tmp_path):
    uninterrupted = run_to_end(command(shakespeare_data, shakespeare_path, tmp_path / "a"))

    interrupted = command(shakespeare_data, shakespeare_path, tmp_path / "b")
    before_kill = run_until_first_checkpoint_then_kill(interrupted)
    assert load_checkpoint(tmp_path / "b")["iter_num"] == 6
    resumed = run_to_end([*interrupted, "--resume"])

    assert "resuming from" in resumed and "at iter 6" in resumed
    expected = logged(uninterrupted, "iter")
    after = logged(resumed, "iter")
    assert sorted(after) == list(range(7, 17))  # continues where the checkpoint was
    assert after == {i: expected[i] for i in after}
    assert logged(resumed, "eval") == {i: v for i, v in logged(uninterrupted, "eval").items() if i > 6}
    # ...and what ran before the kill matched too.
    assert logged(before_kill, "iter") == {i: expected[i] for i in logged(before_kill, "iter")}


def test_resume_refuses_a_different_model_shape(shakespeare_data, shakespeare_path, tmp_path, capsys):
    argv = command(shakespeare_data, shakespeare_path, tmp_path / "a", "--max-iters", "2")[2:]
    assert main(argv) == 0
    capsys.readouterr()
    assert main([*argv, "--resume", "--n-embd", "64"]) == 1
    assert capsys.readouterr().err == (
        "error: --resume: the checkpoint was trained with other settings (n_embd 32 -> 64); "
        "resume with the original flags or start a new --out-dir\n"
    )


def test_best_checkpoint_keeps_its_content_when_latest_moves_on(tmp_path):
    save_checkpoint(tmp_path, {"iter_num": 1}, is_best=True)
    save_checkpoint(tmp_path, {"iter_num": 2}, is_best=False)
    assert torch.load(tmp_path / "best.pt", weights_only=True) == {"iter_num": 1}
    assert torch.load(tmp_path / LATEST, weights_only=True) == {"iter_num": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "ckpt.pt"]


def test_a_save_removes_half_checkpoints_of_a_killed_run(tmp_path):
    killed = subprocess.Popen([sys.executable, "-c", "pass"])
    killed.wait()  # its id is now free: the process that wrote these is gone
    for name in (LATEST, "best.pt"):
        (tmp_path / f".{name}.{killed.pid}.tmp").write_bytes(b"half a checkpoint")
    save_checkpoint(tmp_path, {"iter_num": 1}, is_best=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]


def test_missing_checkpoint_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="--resume: no checkpoint at"):
        load_checkpoint(tmp_path)
