"""What the first multi-GPU and multi-node runs need, shown on the CPU: data
preparation that outlasts the process-group timeout, folders not shared
between nodes, the launch command, the GPU count and bfloat16 capability
(faked), float16 overflow steps and movement pruning, and evaluation shared
out over the ranks; --deterministic."""

import math
import os
import socket
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import torch
from train_support import TINY, shakespeare_flags

from gpt2 import cli, train
from gpt2.configs import RunConfig
from gpt2.run.distributed import Distributed
from gpt2.run.health import RunHealth
from gpt2.model.gpt import GPT, GPTConfig
from gpt2.run.precision import Precision, resolve_precision
from gpt2.run.setup import select_device, use_deterministic
from gpt2.run.state import TrainState
from gpt2.run.trainer import Trainer
from lib.pruning import PruningConfig, build_pruner
from lib.trackers.journal import journal_path, read_journal
from scripts import launch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# One micro-step per rank; BLAS matmuls on every rank (no choice by timing).
DDP_FLAGS = ["--gradient-accumulation-steps", "2", "--cpu-matmul", "blas"]


def torchrun_faulty(flags, **env):
    """Two gloo processes of tests/ddp_support.py (gpt2.train with a fault)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "tests/ddp_support.py", *TINY, *DDP_FLAGS, *flags]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", **env}
    return subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, env=env)


def error_lines(result):
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


# ----------------------------------------------------------------------------
# Several processes (gloo)


def test_data_preparation_longer_than_the_process_group_timeout_still_trains(shakespeare_path, tmp_path):
    """Rank 0 prepares for 12 s more than usual; rank 1 waits outside any
    collective, so a 5 s --dist-timeout does not stop it (it did when rank 1
    waited in a collective: gloo's "Timed out waiting 5000ms")."""
    result = torchrun_faulty(
        [*shakespeare_flags(tmp_path / "data", shakespeare_path), "--out-dir", str(tmp_path / "out"),
         "--max-iters", "2", "--eval-interval", "2", "--dist-timeout", "5"],
        GPT2LAB_TEST_PREPARE_DELAY="12",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "iter 2 |" in result.stdout and "eval 2 |" in result.stdout
    assert (tmp_path / "out" / "ckpt.pt").is_file()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_failure_on_rank_0_alone_stops_every_rank_within_seconds(shakespeare_data, shakespeare_path, tmp_path):
    """Rank 0's checkpoint write fails (a full disk) while rank 1 goes on
    into the next step's all-reduce.  The two processes are started without
    torchrun (as on two nodes, where no agent kills the other node's
    workers): rank 1 exits with one line naming rank 0's failure within
    seconds, not after the 120 s --dist-timeout."""
    port = free_port()
    flags = [*TINY, *DDP_FLAGS, *shakespeare_flags(shakespeare_data, shakespeare_path), "--out-dir",
             str(tmp_path / "out"), "--max-iters", "20", "--eval-interval", "2", "--dist-timeout", "120"]  # fmt: skip
    procs = []
    for rank in (0, 1):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "RANK": str(rank), "LOCAL_RANK": str(rank),
               "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
               "GPT2LAB_TEST_RANK0_DISK_FULL": "1"}  # fmt: skip
        procs.append(subprocess.Popen([sys.executable, "tests/ddp_support.py", *flags], cwd=REPO_ROOT, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))  # fmt: skip
    start = time.monotonic()
    results = [proc.communicate(timeout=100) for proc in procs]
    seconds = time.monotonic() - start
    try:
        assert [proc.returncode for proc in procs] == [1, 1], results
        rank0_err, rank1_err = results[0][1], results[1][1]
        assert [line for line in rank0_err.splitlines() if line.startswith("error:")] == [
            f"error: No space left on device: {tmp_path / 'out' / 'ckpt.pt'}; check --out-dir, --data-dir and "
            "--json-output"]
        assert [line for line in rank1_err.splitlines() if line.startswith("error:")] == [
            f"error: rank 0 failed ([Errno 28] No space left on device: '{tmp_path / 'out' / 'ckpt.pt'}'); "
            "rank 1 stops too"]
        assert seconds < 90  # the whole runs, start-up included; without the fix rank 1 waits 120 s more
    finally:
        for proc in procs:
            proc.kill()


def test_grad_norm_under_ddp_is_the_whole_models_on_every_rank(shakespeare_data, shakespeare_path, tmp_path):
    """Clipping sees the all-reduced gradients: every rank gets the same
    norm (the ranks train on different batches, so a norm taken before the
    all-reduce would differ), and rank 0 logs exactly that value."""
    norms = tmp_path / "norms"
    norms.mkdir()
    result = torchrun_faulty(
        [*shakespeare_flags(shakespeare_data, shakespeare_path), "--out-dir", str(tmp_path / "out"),
         "--max-iters", "4", "--log-interval", "2", "--grad-clip", "1.0"],
        GPT2LAB_TEST_GRAD_NORMS=str(norms),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rank0, rank1 = ([float(v) for v in (norms / f"rank{r}.txt").read_text().split()] for r in (0, 1))
    assert len(rank0) == len(rank1) == 4
    assert rank0 == pytest.approx(rank1, rel=1e-6, abs=0)
    logged = {r["step"]: r["metrics"]["train/grad_norm"] for r in read_journal(journal_path(tmp_path / "out"))
              if r["kind"] == "log" and "train/grad_norm" in r["metrics"]}  # fmt: skip
    assert logged == {2: pytest.approx(rank0[1], rel=1e-6), 4: pytest.approx(rank0[3], rel=1e-6)}


def test_out_dir_not_shared_by_every_rank_is_one_error_line(shakespeare_data, shakespeare_path, tmp_path):
    """Rank 1 sees another folder under the same --out-dir (another node's
    disk): one line before training, and no marker left behind."""
    (tmp_path / "node0").mkdir(), (tmp_path / "node1").mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         os.path.join(REPO_ROOT, "tests", "ddp_support.py"), *TINY, *DDP_FLAGS,
         *shakespeare_flags(shakespeare_data, shakespeare_path), "--out-dir", "out", "--max-iters", "1"],
        cwd=tmp_path / "node0", capture_output=True, text=True, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1", "GPT2LAB_TEST_RANK1_CWD": str(tmp_path / "node1")},
    )  # fmt: skip
    assert result.returncode != 0
    assert error_lines(result) == [
        f"error: rank 1 on {os.uname().nodename}: --out-dir out is not the folder rank 0 writes to; put "
        "--out-dir on a filesystem every node shares (rank 0 alone writes checkpoints, every rank reads "
        "them on --resume)"
    ]
    assert "iter 1" not in result.stdout
    # Nothing left behind: the out-dir lock removes the folder it created.
    assert not (tmp_path / "node0" / "out").exists()


def test_data_dir_not_shared_by_every_rank_is_one_error_line(shakespeare_data, shakespeare_path, tmp_path):
    """Rank 1 finds no prepared data where rank 0 has it (a node without
    that --data-dir): one line, no training."""
    result = torchrun_faulty(
        [*shakespeare_flags(shakespeare_data, shakespeare_path), "--out-dir", str(tmp_path / "out"),
         "--max-iters", "1"],
        GPT2LAB_TEST_RANK1_NO_DATA="1",
    )
    assert result.returncode != 0
    assert error_lines(result) == [
        f"error: rank 1 on {os.uname().nodename}: --data-dir: {shakespeare_data / 'shakespeare'}, prepared by "
        "rank 0, is missing or different here; put --data-dir on a filesystem every node shares, or prepare the "
        "same data on each node first (gpt2/prepare_data.py)"
    ]
    assert "iter 1" not in result.stdout


# ----------------------------------------------------------------------------
# The launch command


def write_config(build, **settings):
    build.mkdir()
    (build / "config.py").write_text("".join(f"{k} = {v!r}\n" for k, v in settings.items()))


@pytest.mark.parametrize("endpoint", ["localhost:29500", "127.0.0.1:29500", "[::1]:29500", "127.0.1.1:1234"])
def test_loopback_rendezvous_with_several_nodes_is_one_error_line(tmp_path, capsys, endpoint):
    write_config(tmp_path / "build", NPROC_PER_NODE=8, NNODES=2, RDZV_ENDPOINT=endpoint)
    with pytest.raises(SystemExit) as stop:
        launch.main(["--build-dir", str(tmp_path / "build"), "--dry-run"])
    assert stop.value.code == (
        f"error: RDZV_ENDPOINT {endpoint} is this machine only, but NNODES is 2: each node would wait for "
        "itself; set RDZV_ENDPOINT to the first node's address (host:port) or pass --rdzv-endpoint HOST:PORT"
    )
    assert capsys.readouterr().out == ""  # nothing started


def test_slurm_command_of_the_readme(tmp_path, capsys, monkeypatch):
    """README's SLURM job: `srun python -m scripts.launch --rdzv-endpoint
    "$head:29500"` on each of 2 nodes runs this torchrun on each."""
    write_config(tmp_path / "build", NPROC_PER_NODE=8, NNODES=2, RDZV_ENDPOINT="localhost:29500")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    launch.main(["--build-dir", str(tmp_path / "build"), "--rdzv-endpoint", "gpu-node-01:29500", "--dry-run",
                 "--", "--max-iters", "100"])
    args_file = tmp_path / "build" / "train.args"
    assert capsys.readouterr().out.split() == [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "8", "--nnodes", "2",
        "--rdzv-backend", "c10d", "--rdzv-endpoint", "gpu-node-01:29500", "--rdzv-id", "4242",
        "-m", "gpt2.train", f"@{args_file}", "--max-iters", "100",
    ]  # fmt: skip
    # One node keeps localhost, and without SLURM the id is a fixed one.
    monkeypatch.delenv("SLURM_JOB_ID")
    write_config(tmp_path / "one", NPROC_PER_NODE=8, NNODES=1, RDZV_ENDPOINT="localhost:29500")
    launch.main(["--build-dir", str(tmp_path / "one"), "--dry-run"])
    assert "--rdzv-endpoint localhost:29500 --rdzv-id gpt2lab -m gpt2.train" in capsys.readouterr().out


# ----------------------------------------------------------------------------
# GPUs, faked


def system_config(*flags):
    return RunConfig.from_flags(vars(cli.parse_args(["--tracker", "none", *flags]))).system


@pytest.fixture
def fake_gpus(monkeypatch):
    """CUDA with two GPUs of compute capability 7.0 (V100), as far as torch's
    queries tell; creating a bfloat16 tensor on one is an error."""
    gpus = SimpleNamespace(capability=(7, 0), set_device=[])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: gpus.capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100-SXM2-16GB")
    monkeypatch.setattr(torch.cuda, "set_device", gpus.set_device.append)

    def no_query(*args, **kwargs):
        raise AssertionError("is_bf16_supported() creates a bfloat16 tensor on GPU 0")

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", no_query)
    for name in ("WORLD_SIZE", "LOCAL_WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    return gpus


def test_bfloat16_before_ampere_falls_back_to_float16_with_one_notice(fake_gpus):
    notices = []
    precision = resolve_precision(system_config("--device", "cuda", "--dtype", "bfloat16"), log=notices.append)
    assert (precision.device_type, precision.dtype, precision.compile) == ("cuda", "float16", True)
    assert notices == [
        "notice: Tesla V100-SXM2-16GB (compute capability 7.0) has no native bfloat16 (needs 8.0, Ampere or "
        "newer); training in float16 with a gradient scaler (set DTYPE=float16 / --dtype float16 to silence)"
    ]
    fake_gpus.capability = (8, 0)  # A100
    notices.clear()
    precision = resolve_precision(system_config("--device", "cuda:1", "--dtype", "bfloat16"), log=notices.append)
    assert precision.dtype == "bfloat16" and notices == []


@pytest.fixture
def keep_tf32_settings():
    """select_device turns TF32 on for CUDA: put the settings back after."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_device_cuda_1_becomes_the_current_device(fake_gpus, monkeypatch, keep_tf32_settings):
    device = select_device(system_config("--device", "cuda:1"), Precision("cuda", "bfloat16", True))
    assert device == torch.device("cuda", 1)
    assert fake_gpus.set_device == [torch.device("cuda", 1)]
    # Under torchrun: the GPU of LOCAL_RANK, whatever --device says.
    fake_gpus.set_device.clear()
    monkeypatch.setenv("WORLD_SIZE", "4"), monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert select_device(system_config("--device", "cuda"), Precision("cuda", "bfloat16", True)) == torch.device(
        "cuda", 1
    )
    assert fake_gpus.set_device == [torch.device("cuda", 1)]


@pytest.mark.parametrize(
    "flags, env, message",
    [
        (["--device", "cuda:2"], {}, "error: --device cuda:2: this machine has 2 GPU(s) (cuda:0 to cuda:1); "
         "use one of them"),
        (["--device", "cuda"], {"WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "4", "RANK": "0", "LOCAL_RANK": "0"},
         "error: NPROC_PER_NODE: 4 processes on this node, but it has 2 GPU(s); set NPROC_PER_NODE "
         "(torchrun --nproc-per-node) to 2 or fewer"),
    ],
)  # fmt: skip
def test_more_gpus_than_the_machine_has_is_one_error_line(fake_gpus, monkeypatch, capsys, flags, env, message):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    status = train.main(["--tracker", "none", "--dtype", "float16", "--no-compile", *flags])
    assert status == 1
    assert capsys.readouterr().err.splitlines() == [message]
    assert fake_gpus.set_device == []


# ----------------------------------------------------------------------------
# float16 overflow and movement pruning


def test_float16_overflow_steps_leave_movement_scores_finite():
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=8, vocab_size=64, n_layer=1, n_head=2, n_embd=16))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    pruner = build_pruner(model, optimizer, PruningConfig("movement", 0.5, 0, 10, 1, "zhu-gupta", False))
    tokens = torch.randint(64, (2, 9))
    x, y = tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()
    run = SimpleNamespace(
        optimizer=optimizer, device=torch.device("cpu"), micro_steps=1, dist=Distributed(), model=model,
        raw_model=model, batches=SimpleNamespace(next_train=lambda: (x, y)),
        precision=Precision("cpu", "float32", False), scaler=torch.amp.GradScaler("cpu", init_scale=2.0**16),
        cfg=SimpleNamespace(training=SimpleNamespace(grad_clip=1.0)), pruner=pruner, state=TrainState(),
        health=RunHealth(model, torch.device("cpu"), grad_clip=1.0, health_interval=0, loss_spike_factor=0.0),
    )  # fmt: skip
    weight = model.transformer.h[0].mlp.c_fc.weight
    overflow = weight.register_hook(lambda grad: grad * math.inf)  # a float16 overflow, as the scaler sees it
    Trainer.train_step(run, lr=0.01)
    assert run.scaler.get_scale() == 2.0**15  # the scaler skipped this step
    assert all(torch.isfinite(score).all() for score in pruner.movement.values())
    overflow.remove()
    run.state.iter_num = 1
    Trainer.train_step(run, lr=0.01)
    assert run.scaler.get_scale() == 2.0**15  # this one it took
    assert all(torch.isfinite(score).all() for score in pruner.movement.values())
    assert pruner.movement["transformer.h.0.mlp.c_fc.weight"].abs().sum() > 0


# ----------------------------------------------------------------------------
# Evaluation shared out over the ranks


class LossOfX(torch.nn.Module):
    """A model whose loss is its input, recording which inputs it scored."""

    def __init__(self):
        super().__init__()
        self.scored = []

    def forward(self, x, y):
        self.scored.append(int(x))
        return None, x.float()


def test_each_rank_evaluates_its_share_of_the_batches():
    def run_as(rank, world_size, reduce):
        dist = Distributed(rank=rank, world_size=world_size)
        dist.all_reduce_sum = reduce
        return SimpleNamespace(
            cfg=SimpleNamespace(training=SimpleNamespace(eval_iters=5)), dist=dist, device=torch.device("cpu"),
            precision=Precision("cpu", "float32", False), eval_model=LossOfX(),
            batches=SimpleNamespace(eval_batches=lambda split, n, rank, world: (
                (i, (torch.tensor(i), None)) for i in range(n) if i % world == rank)),
        )  # fmt: skip

    single = run_as(0, 1, lambda t: t)
    assert Trainer.estimate_losses(single) == {"train": 2.0, "val": 2.0}  # mean of batches 0..4
    assert single.eval_model.scored == [0, 1, 2, 3, 4] * 2
    shares = []

    def add_rank_0s_share(losses):
        shares.append(losses.clone())
        return losses + torch.tensor([0, 0, 2, 0, 4.0])

    rank1 = run_as(1, 2, add_rank_0s_share)
    assert Trainer.estimate_losses(rank1) == {"train": 2.0, "val": 2.0}
    assert rank1.eval_model.scored == [1, 3, 1, 3]  # batches 1 and 3 of each split
    assert shares[0].tolist() == [[0, 1, 0, 3, 0], [0, 1, 0, 3, 0]]  # its losses, zeros elsewhere


# ----------------------------------------------------------------------------
# --deterministic


def test_deterministic_run_uses_deterministic_kernels_and_records_it(shakespeare_data, shakespeare_path, tmp_path):
    """--deterministic turns torch's deterministic mode on (every kernel of
    the CPU path has a deterministic version: no warning) and the run's
    record says so."""
    result = subprocess.run(
        [sys.executable, "-W", "always", "gpt2/train.py", *TINY, *shakespeare_flags(shakespeare_data, shakespeare_path),
         "--out-dir", str(tmp_path / "out"), "--max-iters", "2", "--deterministic"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "deterministic" not in result.stderr  # torch warns of each operation without a deterministic kernel
    (start,) = [r for r in read_journal(journal_path(tmp_path / "out")) if r["kind"] == "start"]
    assert start["config"]["deterministic"] is True and start["config"]["provenance"]["deterministic"] is True


def test_deterministic_setting_reaches_torch_and_cublas(monkeypatch):
    calls = []
    monkeypatch.setattr(torch, "use_deterministic_algorithms", lambda mode, **kw: calls.append((mode, kw)))
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    use_deterministic(system_config("--no-deterministic"))
    assert calls == [] and "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    use_deterministic(system_config("--deterministic"))
    assert calls == [(True, {"warn_only": False})] and os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
