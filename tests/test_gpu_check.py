"""`make gpu-check` on a machine without CUDA: one line, exit 1, no file;
and everything it does up to the first CUDA call, with CUDA faked absent:
its checks of the arguments, the preset it configures, the flags it passes,
and its training orchestration (run, kill -9, resume, compare, read
Trackio) on a tiny CPU model."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gpt2 import cli
from scripts import gpu_check
from train_support import TINY

REPO_ROOT = Path(__file__).resolve().parent.parent
MAKE = ["make", "-s", "-C", str(REPO_ROOT), "-o", ".venv/.installed", f"PYTHON={sys.executable}"]


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_make_gpu_check_without_cuda_is_one_line_and_exit_1(tmp_path):
    out = tmp_path / "gpu-check.json"
    result = subprocess.run([*MAKE, "gpu-check", f"ARGS=--out {out}"], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) <= 2 and lines[0].startswith("error: no CUDA GPU here"), result.stderr  # (+ make's own line)
    assert "make gpu-check on a machine with an NVIDIA (or ROCm) GPU" in lines[0]
    assert not out.exists()


def test_faked_absent_cuda_stops_before_any_work(no_cuda, shakespeare_path, tmp_path, capsys):
    out = tmp_path / "gpu-check.json"
    assert gpu_check.main(["--out", str(out), "--input", str(shakespeare_path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: no CUDA GPU here (torch.cuda.is_available() is False")
    assert captured.err.count("\n") == 1
    assert not out.exists()


def test_argument_errors_come_first(no_cuda, tmp_path, capsys):
    assert gpu_check.main(["--input", str(tmp_path / "missing.txt")]) == 1
    assert capsys.readouterr().err == (
        f"error: --input {tmp_path / 'missing.txt'}: no such file; point --input at Tiny Shakespeare's input.txt\n"
    )
    assert gpu_check.main(["--out", str(tmp_path), "--input", __file__]) == 1
    assert "is a folder" in capsys.readouterr().err


def test_the_runs_it_starts_are_the_preset_with_its_overrides(no_cuda, tmp_path):
    """The configure commands make the gpt2-trackio preset; the flags it adds
    parse, override only what they name, and keep the preset's bf16 + compile."""
    build = tmp_path / "build"
    for command in gpu_check.configure_commands(tmp_path / ".config", build):
        result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
    flags = gpu_check.train_flags(tmp_path, "preset", gpu_check.RUN_FLAGS, gpu_check.STEPS)
    args = cli.parse_args([f"@{build / 'train.args'}", *flags])
    assert (args.device, args.dtype, args.compile, args.model, args.tracker) == (
        "cuda", "bfloat16", True, "gpt2", "trackio")
    assert (args.dataset, args.batch_size, args.block_size) == ("finewebedu", 12, 1024)  # the preset's
    assert (args.gradient_accumulation_steps, args.max_iters, args.eval_interval) == (4, 300, gpu_check.KILL_AT)
    assert args.data_input == str(tmp_path / "shakespeare.parquet")
    ddp = gpu_check.train_command(build, flags, nproc=2)
    assert ddp[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]


def test_training_checks_run_kill_resume_and_read_trackio(no_cuda, shakespeare_path, tmp_path):
    """The orchestration on a tiny CPU model in place of the GPU flags: the
    preset run's loss goes down and reaches Trackio, the killed and resumed
    run repeats its losses exactly (CPU), DDP is skipped on one GPU."""
    work = tmp_path / "work"
    work.mkdir()
    gpu_check.shakespeare_parquet(shakespeare_path, work / "shakespeare.parquet")
    for command in gpu_check.configure_commands(work / ".config", work / "build"):
        subprocess.run(command, cwd=REPO_ROOT, check=True, capture_output=True, timeout=120)
    cpu = [*TINY, "--tracker", "trackio", "--gradient-accumulation-steps", "1", "--eval-interval", "4",
           "--log-interval", "1"]  # fmt: skip
    report, lines = {}, []
    gpu_check.training_checks(work, work / "build", gpu_check.environment(work), 1, report, lines.append,
                              base=cpu, steps=8, kill_at=4)  # fmt: skip
    assert report["preset"]["ok"], lines
    assert sorted(report["preset"]["losses"]) == list(range(1, 9))
    assert report["preset"]["trackio_loss_points"] >= 8
    resume = report["resume"]
    assert resume["killed_exit"] == -9 and resume["exit"] == 0
    assert resume["steps_compared"] == [5, 6, 7, 8] and resume["identical"] and resume["ok"]
    assert report["ddp"] == {"skipped": "one GPU"}
    assert len(lines) == 3 and lines[1].startswith("resume: killed at step 4")
    json.dumps(report)  # what main() writes
