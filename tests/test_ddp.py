"""Data-parallel training: torchrun with 2 CPU processes (gloo) trains, and
only rank 0 prints, checkpoints and writes the JSON; the ranks share the
evaluation out and get one process's numbers.  tests/test_multinode.py has
the faults of multi-node runs."""

import json
import os
import re
import subprocess
import sys

import torch
from train_support import TINY, shakespeare_flags

from lib.trackers.journal import journal_path, read_journal

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def torchrun(data_dir, input_path, out_dir, *flags):
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "gpt2/train.py", *TINY, *shakespeare_flags(data_dir, input_path),
        "--out-dir", str(out_dir), "--json-output", str(out_dir / "metrics.json"), *flags,
    ]  # fmt: skip
    # One thread per process: two ranks share this machine's cores.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, env=env)


def test_two_processes_train_and_only_rank_0_writes(shakespeare_data, shakespeare_path, tmp_path):
    out_dir = tmp_path / "out"
    # 4 accumulation steps in total: 2 micro-steps per rank, so no_sync is used.
    # BLAS matmuls (not the fastest measured): the same kernels as the one-process run below.
    flags = ["--max-iters", "4", "--eval-interval", "2", "--gradient-accumulation-steps", "4", "--cpu-matmul", "blas"]
    result = torchrun(shakespeare_data, shakespeare_path, out_dir, *flags)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    # Each line once: rank 1 prints nothing.
    assert [int(n) for n in re.findall(r"^iter (\d+) \|", out, re.M)] == [1, 2, 3, 4]
    assert [int(n) for n in re.findall(r"^eval (\d+) \|", out, re.M)] == [0, 2, 4]
    assert out.count("model custom:") == 1 and out.count("done:") == 1
    assert "4 accumulation" in out and "2 processes" in out
    assert sorted(p.name for p in out_dir.iterdir() if p.suffix in (".pt", ".json", ".tmp")) == [
        "best.pt",
        "ckpt.pt",
        "metrics.json",
    ]
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert metrics["iterations"] == 4
    assert metrics["tokens_seen"] == 4 * 4 * 32 * 4  # iters x batch x block x total accumulation
    checkpoint = torch.load(out_dir / "ckpt.pt", weights_only=True)
    assert len(checkpoint["rng"]) == 2  # each rank's generators, for an exact resume
    assert not torch.equal(*(r["batches"]["train_generator"] for r in checkpoint["rng"]))
    # Each rank scored one of the 2 eval batches of each split: the same
    # untrained losses as one process scoring both.
    single = subprocess.run(
        [sys.executable, "gpt2/train.py", *TINY, *shakespeare_flags(shakespeare_data, shakespeare_path),
         "--out-dir", str(tmp_path / "single"), *flags],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert single.returncode == 0, single.stderr
    assert val_loss_at_0(out_dir) == val_loss_at_0(tmp_path / "single")  # exactly, as journaled


def val_loss_at_0(out_dir):
    (loss,) = [r["metrics"]["val/loss"] for r in read_journal(journal_path(out_dir))
               if r["kind"] == "log" and r["step"] == 0 and "val/loss" in r["metrics"]]  # fmt: skip
    return loss


def test_accumulation_not_divisible_by_the_processes_is_one_error_line(
    shakespeare_data, shakespeare_path, tmp_path
):
    # 3 sequences of 32 tokens a step cannot be shared out among 2 processes
    # (3 accumulation steps of 4 can: 6 sequences each, tests/test_batch.py).
    result = torchrun(shakespeare_data, shakespeare_path, tmp_path / "out", "--max-iters", "1",
                      "--batch-size", "3", "--gradient-accumulation-steps", "1")
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    # One line, the error itself (not "rank 1 failed (...); rank 0 stops
    # too": every rank raises it, so each is stopping on its own).
    assert len(errors) == 1 and errors[0].startswith("error: --gradient-accumulation-steps 1:") and (
        "--gradient-accumulation-steps 1: its 96 tokens per step (3 batch x 32 block x 1) do not split into "
        "whole sequences on 2 processes; use a multiple of 2, or --total-batch-tokens 64 or 128") in errors[0]
    assert not list((tmp_path / "out").glob("*.pt"))
