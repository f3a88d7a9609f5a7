"""The parts of the CUDA path that do not need a GPU, run on the CPU with the
same code: torch.compile, bfloat16 autocast, float16 with the gradient
scaler, the plain nn.Linear / F.cross_entropy the GPU computes with, and
the gpt2-trackio preset's real settings on the 124M model.  What only a GPU
can show is scripts/gpu_check.py's (tests/test_gpu_check.py)."""

import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gpt2 import cli
from gpt2.configs import RunConfig
from gpt2.cpu.matmul import OneDNNLinear
from gpt2.run.distributed import start
from gpt2.run.precision import cpp_compiler, resolve_precision
from gpt2.run.setup import build, plain_flags
from gpt2.run.state import TrainState
from gpt2.run.trainer import Trainer
from gpt2.train import main
from scripts.gpu_check import shakespeare_parquet
from train_support import TINY, shakespeare_flags

REPO_ROOT = Path(__file__).resolve().parent.parent
MAKE = ["make", "-s", "-C", str(REPO_ROOT), "-o", ".venv/.installed", f"PYTHON={sys.executable}"]
# The layers and loss a GPU runs: torch's nn.Linear and F.cross_entropy over the full logits.
GPU_PATHS = ["--cpu-matmul", "blas", "--no-cpu-chunked-loss"]


def losses(text):
    """{iter: loss} of the console's `iter N | loss X` lines."""
    return {int(n): float(v) for n, v in re.findall(r"^iter (\d+) \| loss ([0-9.]+)", text, re.M)}


def run_flags(data_dir, input_path, out_dir, *flags):
    """A 4-step tiny run; the learning-rate schedule is fixed at 4 steps
    (--lr-decay-iters) so a run stopped at 2 and resumed to 4 is the same run."""
    return [*TINY, *shakespeare_flags(data_dir, input_path), "--out-dir", str(out_dir), "--max-iters", "4",
            "--lr-decay-iters", "4", "--eval-interval", "2", "--seed", "3", *flags]  # fmt: skip


def train_in_process(capsys, argv):
    assert main(argv) == 0, capsys.readouterr().err
    return capsys.readouterr().out


def train_in_subprocess(argv, env=None):
    result = subprocess.run([sys.executable, "-m", "gpt2.train", *argv], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=600, env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return result.stdout


def assert_resumes_exactly(run, argv):
    """`run` (argv -> console output) to 4 steps, and to 2 then --resume to 4:
    the resumed steps repeat the uninterrupted run's losses exactly."""
    uninterrupted = losses(run([*argv[0], "--max-iters", "4"]))
    assert sorted(uninterrupted) == [1, 2, 3, 4]
    assert uninterrupted[4] < uninterrupted[1]  # it learns
    first_half = losses(run([*argv[1], "--max-iters", "2"]))
    assert first_half == {i: uninterrupted[i] for i in (1, 2)}
    resumed = run([*argv[1], "--max-iters", "4", "--resume"])
    assert "resuming from" in resumed and "at iter 2" in resumed
    assert losses(resumed) == {i: uninterrupted[i] for i in (3, 4)}
    return uninterrupted


def built_model(argv):
    """The model build() makes for these flags (no training)."""
    args = cli.parse_args(argv)
    cfg = RunConfig.from_flags(vars(args))
    precision = resolve_precision(cfg.system, log=lambda _: None)
    run, _ = build(cfg, plain_flags(args), precision, start(precision.device_type), log=lambda _: None,
                   train_args=[], trackers=False)
    return run.raw_model


def test_the_gpu_layers_and_loss_run_on_the_cpu(shakespeare_data, shakespeare_path, tmp_path, capsys):
    """--cpu-matmul blas --no-cpu-chunked-loss: the model holds plain
    nn.Linear layers and no chunked loss (what the GPU runs), and trains to
    the fast paths' losses up to float rounding."""
    base = run_flags(shakespeare_data, shakespeare_path, tmp_path / "x")
    plain = built_model([*base, *GPU_PATHS])
    assert plain.output_loss is None
    assert not any(isinstance(m, OneDNNLinear) for m in plain.modules())
    assert built_model(base).output_loss is not None  # the default on CPU: chunked

    fast = losses(train_in_process(capsys, [*run_flags(shakespeare_data, shakespeare_path, tmp_path / "a")]))
    gpu_paths = train_in_process(capsys, [*run_flags(shakespeare_data, shakespeare_path, tmp_path / "b"), *GPU_PATHS])
    assert "BLAS matmuls" in gpu_paths
    assert losses(gpu_paths) == pytest.approx(fast, abs=2e-4)
    assert sorted(fast) == [1, 2, 3, 4]


def test_bfloat16_autocast_trains_checkpoints_and_resumes(shakespeare_data, shakespeare_path, tmp_path, capsys):
    argv = [[*run_flags(shakespeare_data, shakespeare_path, tmp_path / d), "--dtype", "bfloat16", *GPU_PATHS]
            for d in ("a", "b")]  # fmt: skip
    bf16 = assert_resumes_exactly(lambda a: train_in_process(capsys, a), argv)
    float32 = losses(train_in_process(capsys, [*run_flags(shakespeare_data, shakespeare_path, tmp_path / "c"),
                                               *GPU_PATHS]))  # fmt: skip
    # bfloat16 keeps 8 bits of mantissa: the same run, to about 1%.
    assert bf16 == pytest.approx(float32, rel=0.02)
    assert bf16 != float32  # autocast really ran


def test_float16_uses_the_gradient_scaler_and_resumes(shakespeare_data, shakespeare_path, tmp_path, capsys):
    argv = [[*run_flags(shakespeare_data, shakespeare_path, tmp_path / d), "--dtype", "float16", *GPU_PATHS]
            for d in ("a", "b")]  # fmt: skip
    assert_resumes_exactly(lambda a: train_in_process(capsys, a), argv)
    scaler = torch.load(tmp_path / "b" / "ckpt.pt", weights_only=False)["scaler"]
    assert scaler and scaler["scale"] > 0  # the scaler ran, and its state was saved and restored


@pytest.mark.skipif(cpp_compiler() is None, reason="no C++ compiler (g++ or $CXX): torch.compile cannot run on the "
                    "CPU here; test_compile_without_a_compiler_falls_back covers this machine")
def test_compile_on_cpu_matches_eager_and_resumes(shakespeare_data, shakespeare_path, tmp_path, capsys):
    """Compiled (inductor's C++ kernels, the plain loss a compiled model
    keeps): 2 steps, a checkpoint, --resume to 4, all at the eager run's
    losses up to rounding.  Two compiled processes only: each compiles
    anew, the slow part."""
    eager = losses(train_in_process(capsys, [*run_flags(shakespeare_data, shakespeare_path, tmp_path / "e"),
                                             *GPU_PATHS]))  # fmt: skip
    argv = [*run_flags(shakespeare_data, shakespeare_path, tmp_path / "c"), "--compile"]
    first_half = train_in_subprocess([*argv, "--max-iters", "2"])
    assert "cpu float32 compiled |" in first_half
    assert re.search(r"^iter 1: [\d.]+ s including torch.compile", first_half, re.M)  # said apart from the speed
    resumed = train_in_subprocess([*argv, "--resume"])
    assert "resuming from" in resumed and "at iter 2" in resumed
    compiled = {**losses(first_half), **losses(resumed)}
    assert sorted(compiled) == [1, 2, 3, 4] and compiled[4] < compiled[1]
    # Inductor fuses and reorders float32 sums: equal up to rounding.  (A
    # fresh model at step 3 would be off by about 0.02.)
    assert compiled == pytest.approx(eager, abs=1e-3)


def test_compile_without_a_compiler_falls_back(shakespeare_data, shakespeare_path, tmp_path):
    """No C++ compiler (faked: $CXX names a missing one, and inductor's
    list holds only $CXX): one notice, then the run trains uncompiled."""
    env = dict(os.environ, CXX=str(tmp_path / "no-such-c++"))
    out = train_in_subprocess([*run_flags(shakespeare_data, shakespeare_path, tmp_path / "a"), "--compile",
                               "--max-iters", "2"], env=env)  # fmt: skip
    notices = [line for line in out.splitlines() if "C++ compiler" in line]
    assert notices == [notices[0]] and notices[0].startswith("notice: --compile on the CPU needs a C++ compiler")
    assert str(tmp_path / "no-such-c++") in notices[0]
    assert "compiled" not in out.split(notices[0])[1].splitlines()[1]  # the start-up line
    assert sorted(losses(out)) == [1, 2]


# Compiling the 124M model's graphs on the CPU took 8.5 minutes on the 2
# busy cores of this project's machine: too long for every CI run, so the
# preset test adds --no-compile unless this is set (compile itself is
# covered by test_compile_on_cpu_matches_eager_and_resumes, tiny model).
COMPILE_THE_PRESET = os.environ.get("GPT2LAB_TEST_PRESET_COMPILE") == "1"


def test_the_gpt2_trackio_preset_runs_on_the_cpu(shakespeare_path, tmp_path):
    """make defconfig-gpt2-trackio, then make train with the issue's
    overrides: the 124M model with the preset's real settings (bf16
    autocast; compile, when a compiler is there and
    GPT2LAB_TEST_PRESET_COMPILE=1), tracked in Trackio."""
    parquet = shakespeare_parquet(shakespeare_path, tmp_path / "shakespeare.parquet")
    where = [f"KCONFIG_CONFIG={tmp_path / '.config'}", f"BUILD={tmp_path / 'build'}"]
    result = subprocess.run([*MAKE, *where, "defconfig-gpt2-trackio"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    # --total-batch-tokens 0: the preset's 491,520 tokens a step would be
    # 7,680 micro-batches of 64 tokens; 2 accumulation steps instead.
    args = (f"--device cpu --max-iters 2 --batch-size 1 --total-batch-tokens 0 --gradient-accumulation-steps 2 "
            f"--block-size 64 "
            f"--eval-iters 1 --data-input {parquet} --data-dir {tmp_path / 'data'} --out-dir {tmp_path / 'out'}"
            + ("" if COMPILE_THE_PRESET else " --no-compile"))
    result = subprocess.run([*MAKE, *where, "train", f"ARGS={args}"], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    compiled = " compiled" if cpp_compiler() and COMPILE_THE_PRESET else ""
    assert re.search(rf"model gpt2: 12 layers, 12 heads, 768 wide, block 64, 12\d\.\d\dM parameters \| cpu "
                     rf"bfloat16{compiled}(, \w+ matmuls)? \|", result.stdout), result.stdout  # fmt: skip
    assert "prepared finewebedu" in result.stdout  # the preset's dataset, from the local parquet
    evals = re.findall(r"^eval (\d+) \| train ([0-9.]+) \| val ([0-9.]+)", result.stdout, re.M)
    assert [int(step) for step, _, _ in evals] == [0, 2]
    assert all(0 < float(val) < 12 for _, _, val in evals)
    assert (tmp_path / "out" / "ckpt.pt").is_file()
    assert trackio_points("val/loss") == 2  # eval 0 and eval 2, in Trackio's database


def trackio_points(metric):
    """How many points of `metric` the Trackio databases of this test hold."""
    return sum(
        metric in json.loads(row)
        for db in Path(os.environ["TRACKIO_DIR"]).rglob("*.db")
        for (row,) in sqlite3.connect(db).execute("SELECT metrics FROM metrics")
    )


def test_the_compile_step_is_left_out_of_the_first_interval():
    """With --log-interval 10 the first interval's clock restarts after the
    compiling step (its tok/s and MFU are of trained steps); with 1 that
    step is the interval, and the line before says so."""
    from types import SimpleNamespace

    for interval, restarts in ((10, True), (1, False)):
        lines = []
        run = SimpleNamespace(state=TrainState(iter_num=1), log=lines.append,
                              cfg=SimpleNamespace(training=SimpleNamespace(log_interval=interval)))  # fmt: skip
        start, iters = Trainer.exclude_compile_step(run, torch.tensor(1.0), interval_start=0.0, interval_iters=1)
        assert (iters, start > 0) == ((0, True) if restarts else (1, False))
        assert len(lines) == 1 and lines[0].startswith("iter 1: ") and "including torch.compile" in lines[0]
