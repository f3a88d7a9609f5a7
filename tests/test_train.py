"""The training loop (gpt2/train.py) end to end on CPU, and its small parts:
learning-rate schedule, batches, errors a user can cause."""

import json
import math
import re

import pytest
import torch
from tracking_support import SUMMARY_KEYS as TRACKED_SUMMARY_KEYS
from train_support import TINY, shakespeare_flags

from gpt2.data.batches import Batches
from gpt2.run.checkpoint import BEST, LATEST
from gpt2.errors import UsageError
from gpt2.run.schedule import learning_rate
from gpt2.train import main
from lib.optim import optimizer_names

# What the trackers get at the end, and the iteration count besides.
SUMMARY_KEYS = {*TRACKED_SUMMARY_KEYS, "iterations"}


@pytest.fixture
def tiny_run(shakespeare_data, shakespeare_path, tmp_path):
    """Run gpt2/train.py's main() on the tiny model; returns (exit code,
    out_dir, parsed JSON or None)."""

    def run(*flags):
        out_dir, json_path = tmp_path / "out", tmp_path / "metrics.json"
        argv = [
            *TINY, *shakespeare_flags(shakespeare_data, shakespeare_path),
            "--out-dir", str(out_dir), "--json-output", str(json_path),
            *flags,
        ]  # fmt: skip
        code = main(argv)
        metrics = json.loads(json_path.read_text()) if json_path.exists() else None
        return code, out_dir, metrics

    return run


def logged(text, kind):
    """{iteration: numbers} of the console's `iter N | loss X` or
    `eval N | train X | val Y` lines."""
    if kind == "iter":
        return {int(n): float(x) for n, x in re.findall(r"^iter (\d+) \| loss ([\d.]+)", text, re.M)}
    return {int(n): (float(t), float(v)) for n, t, v in re.findall(r"^eval (\d+) \| train ([\d.]+) \| val ([\d.]+)", text, re.M)}


def test_loss_goes_down(tiny_run, capsys):
    code, _, metrics = tiny_run(
        "--max-iters", "40", "--eval-interval", "20", "--log-interval", "5", "--learning-rate", "3e-3"
    )
    out = capsys.readouterr().out
    assert code == 0
    train, evals = logged(out, "iter"), logged(out, "eval")
    assert sorted(train) == [5, 10, 15, 20, 25, 30, 35, 40]
    assert sorted(evals) == [0, 20, 40]
    assert train[40] < train[5] - 1.0
    assert evals[40][1] < evals[0][1] - 1.5  # val, from about 10.8
    assert evals[0][1] == pytest.approx(math.log(50304), abs=0.2)
    assert metrics["final_val_loss"] == pytest.approx(evals[40][1], abs=1e-4)


def test_console_lines_have_the_documented_fields(tiny_run, capsys):
    tiny_run("--max-iters", "2", "--eval-interval", "2")
    out = capsys.readouterr().out
    assert re.search(
        r"^iter 2 \| loss \d+\.\d{4} \| lr \d\.\d\de-\d\d \| \d+\.\d ms/iter \| [\d,]+ tok/s \| "
        r"mfu \d+\.\d% \| sparsity 0\.00$",
        out,
        re.M,
    ), out
    assert re.search(r"^eval 2 \| train \d+\.\d{4} \| val \d+\.\d{4} \| best \d+\.\d{4}$", out, re.M), out


def test_json_output_holds_the_final_metrics(tiny_run, tmp_path):
    code, _, metrics = tiny_run("--max-iters", "6", "--eval-interval", "3", "--gradient-accumulation-steps", "2")
    assert code == 0
    assert set(metrics) == SUMMARY_KEYS
    assert metrics["iterations"] == 6
    assert metrics["tokens_seen"] == 6 * 4 * 32 * 2  # iters x batch x block x accumulation
    assert metrics["total_training_time"] > 0
    assert metrics["tokens_per_sec"] == pytest.approx(metrics["tokens_seen"] / metrics["total_training_time"])
    assert metrics["best_val_loss"] <= metrics["final_val_loss"]
    assert metrics["sparsity"] == 0.0
    assert not list(tmp_path.glob("*.tmp"))


def test_checkpoints_are_complete_and_no_temporary_file_is_left(tiny_run):
    code, out_dir, metrics = tiny_run("--max-iters", "4", "--eval-interval", "2")
    assert code == 0
    assert sorted(p.name for p in out_dir.iterdir() if p.suffix in (".pt", ".tmp")) == [BEST, LATEST]
    checkpoint = torch.load(out_dir / LATEST, weights_only=True)
    assert checkpoint["iter_num"] == 4
    assert checkpoint["best_val_loss"] == pytest.approx(metrics["best_val_loss"])
    assert {"model", "optimizer", "pruner", "scaler", "rng", "args", "trackers", "model_config"} <= set(checkpoint)
    best = torch.load(out_dir / BEST, weights_only=True)
    assert best["best_val_loss"] == pytest.approx(metrics["best_val_loss"])


def test_no_bias_flag_leaves_no_bias_in_the_checkpoint(tiny_run):
    _, out_dir, _ = tiny_run("--max-iters", "1", "--no-bias")
    assert not [k for k in torch.load(out_dir / LATEST, weights_only=True)["model"] if "bias" in k]
    _, out_dir, _ = tiny_run("--max-iters", "1", "--bias")
    assert "transformer.h.0.ln_1.bias" in torch.load(out_dir / LATEST, weights_only=True)["model"]


@pytest.mark.parametrize("optimizer", optimizer_names())
def test_every_optimizer_trains(tiny_run, optimizer, capsys):
    code, _, metrics = tiny_run("--max-iters", "5", "--eval-interval", "5", "--optimizer", optimizer)
    assert code == 0, capsys.readouterr().err
    assert metrics["iterations"] == 5
    assert math.isfinite(metrics["final_val_loss"])
    # Any sensible update lowers the loss of a freshly initialised model.
    assert metrics["final_val_loss"] < logged(capsys.readouterr().out, "eval")[0][1]


@pytest.mark.parametrize(
    "method, optimizer", [("magnitude", "adamw"), ("movement", "adamw"), ("state", "adamwprune")]
)
def test_every_pruning_method_reaches_its_target(tiny_run, method, optimizer, capsys):
    code, _, metrics = tiny_run(
        "--max-iters", "8", "--eval-interval", "8", "--optimizer", optimizer,
        "--pruning-method", method, "--target-sparsity", "0.5",
        "--pruning-warmup", "2", "--pruning-ramp-iters", "4", "--pruning-interval", "1",
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert metrics["sparsity"] == pytest.approx(0.5, abs=0.01)
    # The console shows the ramp: dense first, at the target by the end.
    sparsities = re.findall(r"^iter (\d+) .*\| sparsity ([\d.]+)$", capsys.readouterr().out, re.M)
    assert float(sparsities[0][1]) == 0.0 and float(sparsities[-1][1]) == pytest.approx(0.5, abs=0.01)


def test_max_time_stops_the_run_cleanly(tiny_run):
    code, out_dir, metrics = tiny_run("--max-iters", "1000000", "--max-time", "1", "--eval-interval", "1000")
    assert code == 0
    assert 0 < metrics["iterations"] < 1000000
    assert metrics["total_training_time"] < 30
    assert (out_dir / LATEST).exists()  # the final eval checkpoints


def test_diverging_loss_stops_with_one_line_and_no_checkpoint(tiny_run, capsys):
    # SGD at the largest allowed rate without clipping overflows float32
    # within a few steps.
    code, out_dir, metrics = tiny_run(
        "--max-iters", "200", "--eval-interval", "200", "--optimizer", "sgd",
        "--learning-rate", "10", "--min-lr", "10", "--warmup-iters", "0", "--grad-clip", "0",
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1
    assert re.fullmatch(r"error: the training loss is not finite \(\S+\) at iter \d+: training diverged; .*\n", err)
    assert not (out_dir / LATEST).exists() and metrics is None


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--resume"], r"error: --resume: no checkpoint at \S+ckpt\.pt; start without --resume"),
        (["--n-embd", "30", "--n-head", "4"], r"error: --model custom: --n-embd 30 must be divisible by --n-head 4"),
        (["--min-lr", "0.01", "--learning-rate", "0.001"], r"error: --min-lr 0\.01 is above --learning-rate 0\.001"),
        (["--pruning-method", "state", "--optimizer", "adamw"], r"error: .*adamwprune"),
        (["--model", "gpt2", "--block-size", "2048"], r"error: --model gpt2: --block-size 2048 exceeds"),
        (["--data-input", "/nonexistent/input.txt", "--data-dir", "{tmp}"], r"error: .*nonexistent"),
        (["--device", "gpu"], r"error: --device gpu: not a supported device; use cuda, cuda:N, mps or cpu"),
        (["--json-output", "{folder}"], r"error: --json-output \S+ is a folder; give a file path"),
        (["--out-dir", "{file}"], r"error: --out-dir \S+ is a file; give a folder"),
        (["--resume", "--out-dir", "{damaged}"], r"error: --resume: cannot read \S+ckpt\.pt \(.+\); start a new --out-dir"),
        (["--resume", "--out-dir", "{foreign}"], r"error: --resume: \S+ckpt\.pt is not a gpt2lab checkpoint \(no model, "),
    ],
)
def test_user_errors_give_one_line_and_exit_1(tiny_run, capsys, tmp_path, flags, message):
    (tmp_path / "a_file").write_text("not a folder\n")
    for name in ("a_folder", "damaged", "foreign"):
        (tmp_path / name).mkdir()
    (tmp_path / "damaged" / LATEST).write_bytes(b"PK\x03\x04 cut short")  # a torch zip file, truncated
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign" / LATEST)  # some other program's checkpoint
    places = {"{tmp}": tmp_path / "empty", "{folder}": tmp_path / "a_folder", "{file}": tmp_path / "a_file",
              "{damaged}": tmp_path / "damaged", "{foreign}": tmp_path / "foreign"}  # fmt: skip
    for key, path in places.items():
        flags = [f.replace(key, str(path)) for f in flags]
    code, _, metrics = tiny_run("--max-iters", "1", *flags)
    err = capsys.readouterr().err
    assert code == 1
    assert re.fullmatch(message + r"[^\n]*\n", err), err
    assert metrics is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests the fallback on a machine without CUDA")
def test_missing_cuda_falls_back_to_cpu_with_one_notice(tiny_run, capsys):
    code, _, _ = tiny_run("--max-iters", "1", "--device", "cuda", "--dtype", "bfloat16", "--compile")
    out = capsys.readouterr().out
    assert code == 0
    assert out.count("notice:") == 1
    assert "notice: CUDA is not available; running on CPU in float32 without torch.compile" in out
    assert re.search(r"\| cpu float32, (oneDNN|BLAS) matmuls \|", out)


@pytest.mark.parametrize("library, shown", [("blas", "BLAS"), ("onednn", "oneDNN")])
def test_the_start_line_names_the_cpu_matmul_library(tiny_run, capsys, library, shown):
    code, _, metrics = tiny_run("--max-iters", "2", "--cpu-matmul", library)
    assert code == 0 and metrics["iterations"] == 2
    assert f"| cpu float32, {shown} matmuls |" in capsys.readouterr().out


# ----------------------------------------------------------------------------
# The parts


def schedule(it, warmup=10, decay=100):
    return learning_rate(it, max_lr=1.0, min_lr=0.1, warmup_iters=warmup, decay_iters=decay)


def test_schedule_warms_up_linearly_then_decays_along_a_cosine_to_the_floor():
    assert schedule(0) == pytest.approx(1 / 11)
    assert schedule(9) == pytest.approx(10 / 11)
    assert schedule(10) == pytest.approx(1.0)
    assert schedule(55) == pytest.approx(0.55)  # half way down the cosine
    assert schedule(100) == schedule(10**6) == pytest.approx(0.1)
    decay = [schedule(i) for i in range(10, 101)]
    assert all(a >= b for a, b in zip(decay, decay[1:]))


def test_schedule_with_warmup_longer_than_decay_is_still_defined():
    assert schedule(5, warmup=20, decay=10) == pytest.approx(6 / 21)
    assert schedule(20, warmup=20, decay=10) == pytest.approx(0.1)


def make_batches(data_dir, block_size=32, seed=1):
    return Batches(
        data_dir / "shakespeare",
        block_size=block_size,
        batch_size=3,
        device=torch.device("cpu"),
        train_seed=seed,
        eval_seed=7,
    )


def test_batches_targets_are_inputs_shifted_by_one(shakespeare_data):
    x, y = make_batches(shakespeare_data).next_train()
    assert x.shape == y.shape == (3, 32) and x.dtype == torch.long
    assert torch.equal(x[:, 1:], y[:, :-1])


def test_batches_resume_from_their_saved_state(shakespeare_data):
    batches = make_batches(shakespeare_data)
    batches.next_train()
    state = batches.state_dict()
    expected = batches.next_train()
    other = make_batches(shakespeare_data, seed=99)
    other.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(other.next_train(), expected))


def test_eval_batches_are_the_same_at_every_eval(shakespeare_data):
    batches = make_batches(shakespeare_data)
    first = [x for _, (x, _) in batches.eval_batches("val", 2)]
    batches.next_train()
    again = [x for _, (x, _) in batches.eval_batches("val", 2)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], first[1])


def test_each_rank_reads_only_its_own_eval_batches(shakespeare_data, monkeypatch):
    """Rank r of 2 gets batches r, r + 2, ... of the single process's, and
    reads no window of the others."""
    batches = make_batches(shakespeare_data)
    single = dict((i, x) for i, (x, _) in batches.eval_batches("val", 5))
    reads = []
    windows = batches._windows
    monkeypatch.setattr(batches, "_windows", lambda tokens, offsets: reads.append(1) or windows(tokens, offsets))
    for rank in (0, 1):
        reads.clear()
        mine = dict((i, x) for i, (x, _) in batches.eval_batches("val", 5, rank, 2))
        assert sorted(mine) == [i for i in range(5) if i % 2 == rank]
        assert all(torch.equal(mine[i], single[i]) for i in mine)
        assert len(reads) == len(mine)


def test_batches_refuse_a_block_longer_than_the_data(shakespeare_data):
    with pytest.raises(UsageError, match=r"val\.bin holds [\d,]+ tokens, too few for --block-size"):
        make_batches(shakespeare_data, block_size=100_000)  # val has ~36k tokens


def test_the_gradient_norm_is_logged_with_clipping_off(tiny_run, monkeypatch):
    """--grad-clip 0 turns clipping off, not the monitor: train/grad_norm is
    the norm of the true gradients every log interval (the same value
    clip_grad_norm_ computes with an infinite bound), and none counts as
    clipped."""
    from lib.trackers.journal import journal_path, read_journal

    returned = []
    clip = torch.nn.utils.clip_grad_norm_

    def recording_clip(parameters, max_norm, *args, **kwargs):
        norm = clip(parameters, max_norm, *args, **kwargs)
        returned.append((max_norm, norm.item()))
        return norm

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", recording_clip)
    code, out_dir, _ = tiny_run("--max-iters", "3", "--grad-clip", "0")
    assert code == 0
    logged = [r["metrics"] for r in read_journal(journal_path(out_dir))
              if r["kind"] == "log" and "train/grad_norm" in r["metrics"]]  # fmt: skip
    assert [m["train/grad_norm"] for m in logged] == pytest.approx([norm for _, norm in returned])
    assert all(bound == float("inf") for bound, _ in returned) and len(returned) == 3
    assert all(m["train/clip_fraction"] == 0 for m in logged)
