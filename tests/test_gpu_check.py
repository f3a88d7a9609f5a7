"""`make gpu-check` on a machine without CUDA: one line, exit 1, no file;
and everything it does up to the first CUDA call, with CUDA faked absent:
its checks of the arguments, the preset it configures, the flags it passes,
the resume verdict, the step runner's limits and its report.  The training
orchestration (run, kill -9, resume, compare, read Trackio) on a tiny CPU
model runs in tests/test_airgapped.py, on the imitated GPU machine."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gpt2 import cli
from scripts import gpu_check
from scripts.gpu_check import check, runs, steps
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
        f"error: --input {tmp_path / 'missing.txt'}: no such file; point --input at Tiny Shakespeare's input.txt "
        "(make wheelhouse copies it to wheelhouse/data/tinyshakespeare/input.txt)\n"
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
    flags = gpu_check.train_flags(tmp_path, "preset", gpu_check.RUN_FLAGS, gpu_check.TRAIN_STEPS)
    args = cli.parse_args([f"@{build / 'train.args'}", *flags])
    assert (args.device, args.dtype, args.compile, args.model, args.tracker) == (
        "cuda", "bfloat16", True, "gpt2", "trackio")
    assert (args.dataset, args.batch_size, args.block_size) == ("finewebedu", 12, 1024)  # the preset's
    assert (args.gradient_accumulation_steps, args.max_iters, args.eval_interval) == (4, 300, gpu_check.KILL_AT)
    assert args.data_input == str(tmp_path / "shakespeare.parquet")
    ddp = gpu_check.train_command(build, flags, nproc=2)
    assert ddp[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]


def test_a_watchdog_kill_before_the_checkpoint_fails_the_verdict():
    """The first run dies of SIGKILL from the watchdog before its cue line,
    and --resume (no checkpoint) starts from step 0 and repeats the
    reference losses exactly: the verdict still fails, saying why."""
    hung = runs.run([sys.executable, "-c", "import time; print('eval 0 |', flush=True); time.sleep(60)"],
                    dict(os.environ), timeout=1, kill_after_line="eval 4 |")  # fmt: skip
    assert (hung.status, hung.on_cue, hung.timed_out) == (-9, False, True)
    reference = {step: 10.0 - step for step in range(1, 9)}
    restarted = runs.Finished(0, "".join(f"iter {s} | loss {v:.4f} | lr 1e-3\n" for s, v in reference.items()))
    verdict = runs.resume_verdict(hung, restarted, reference, kill_at=4)
    assert not verdict["ok"] and verdict["max_abs_diff"] == 0  # the losses "match", and that is not enough
    assert verdict["failures"][:2] == ["the first run was not killed on its step-4 checkpoint line (the watchdog)",
                                       "the resumed run started at step 0 (no resume line), not at 4"]  # fmt: skip
    # On its cue, resumed there, the same losses: it passes; a changed loss fails it.
    cued = runs.run([sys.executable, "-c", "import time; print('eval 4 |', flush=True); time.sleep(60)"],
                    dict(os.environ), timeout=30, kill_after_line="eval 4 |")  # fmt: skip
    assert (cued.status, cued.on_cue, cued.timed_out) == (-9, True, False)
    lines = "".join(f"iter {s} | loss {v:.4f}\n" for s, v in reference.items() if s > 4)
    resumed = runs.Finished(0, "resuming from out/ckpt.pt at iter 4\n" + lines)
    assert runs.resume_verdict(cued, resumed, reference, kill_at=4)["ok"]
    off = runs.Finished(0, resumed.output.replace("loss 2.0000", "loss 2.5000"))
    assert runs.resume_verdict(cued, off, reference, kill_at=4)["failures"] == [
        "losses differ by up to 0.5 (tolerance 0.01)"]


def fast_step(ctx):
    return {"ok": True, "summary": "done", "value": 42}


def slow_step(ctx):
    import time

    time.sleep(600)


def test_a_step_over_its_limit_fails_and_the_next_still_runs(tmp_path):
    out = tmp_path / "gpu-check.json"
    ctx = steps.Context(args=None, work=tmp_path, say=lambda line: None)
    report = check.run_steps(ctx, out, [("slow", 0.2, slow_step), ("fast", 1, fast_step), ("skipped", 1, fast_step)],
                             skip=["skipped"])  # fmt: skip
    assert report["failed"] == ["slow"] and report["passed"] == ["fast"] and report["skipped"] == ["skipped"]
    assert report["steps"]["slow"]["summary"] == "FAILED: over its 0 s limit"
    on_disk = json.loads(out.read_text())
    assert on_disk["finished"] and on_disk["steps"]["fast"]["value"] == 42
    assert check.final_line(report, out).endswith(f"| ran slow, fast | passed fast | failed slow | skipped skipped "
                                                  f"| figures in {out}")  # fmt: skip


KILLED_MID_WAY = """
import sys
from scripts.gpu_check import check, steps
sys.path.insert(0, "tests")
from test_gpu_check import fast_step, slow_step
ctx = steps.Context(args=None, work=None, say=print)
check.run_steps(ctx, sys.argv[1], [("first", 1, fast_step), ("second", 1, fast_step), ("hangs", 100, slow_step)])
"""


def test_the_report_killed_mid_way_holds_the_finished_steps(tmp_path):
    """kill -9 during the third step: gpu-check.json has the first two."""
    out = tmp_path / "gpu-check.json"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_MID_WAY, str(out)], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                            text=True)  # fmt: skip
    assert proc.stdout.readline() == "first: done\n" and proc.stdout.readline() == "second: done\n"
    proc.kill()
    proc.wait()
    report = json.loads(out.read_text())
    assert report["passed"] == ["first", "second"] and not report["finished"]
    assert set(report["steps"]) == {"first", "second"} and report["budget_s"]["hangs"] == 100


# ----------------------------------------------------------------------------
# --deterministic: what makes a GPU resume bit-identical

def test_deterministic_stops_at_an_operation_without_a_deterministic_kernel_with_one_line(
        shakespeare_data, shakespeare_path, tmp_path, monkeypatch, capsys):
    """warn_only=False: the operation raises in the middle of a step, and
    train.py turns that into one line naming it (a warning would let the
    run vary silently); --deterministic's own steps work (step 1 trains)."""
    from gpt2.run.trainer import Trainer
    from gpt2.train import main
    from train_support import shakespeare_flags

    real = Trainer.train_step

    def step(trainer, lr):
        if trainer.state.iter_num == 1:  # no deterministic kernel on the CPU
            torch.zeros(5).put_(torch.tensor([0, 0]), torch.tensor([1.0, 2.0]))
        return real(trainer, lr)

    monkeypatch.setattr(Trainer, "train_step", step)
    argv = [*TINY, *shakespeare_flags(shakespeare_data, shakespeare_path), "--deterministic",
            "--out-dir", str(tmp_path / "out"), "--max-iters", "3"]  # fmt: skip
    try:
        assert main(argv) == 1
    finally:
        torch.use_deterministic_algorithms(False)
    captured = capsys.readouterr()
    assert "iter 1 |" in captured.out
    assert captured.err.splitlines()[-1] == (
        "error: --deterministic: put_ has no deterministic kernel on this device, so this run "
        "cannot repeat bit for bit; run without --deterministic (DETERMINISTIC=n)")


def test_the_pretrained_check_builds_openais_124m_config():
    from scripts.checks.pretrained_check import BLOCK, pretrained_config

    config = pretrained_config()
    assert (config.model, config.init_from, config.block_size, config.dropout, config.bias) == (
        "gpt2", "gpt2", BLOCK, 0.0, True)
    shape = config.gpt_config()
    assert (shape.n_layer, shape.n_head, shape.n_embd, shape.vocab_size) == (12, 12, 768, 50257)
