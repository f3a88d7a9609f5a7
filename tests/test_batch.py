"""The batch from what the optimizer should see (TOTAL_BATCH_TOKENS), the
micro-batch from the hardware (BATCH_SIZE_AUTO, with an injected
out-of-memory error: the search, the back-off, the all-rank minimum, the
record), and activation checkpointing (same loss and gradients)."""

import functools
import json
import os
import re
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from train_support import TINY, shakespeare_flags

import gpt2.run.setup as run_setup
from gpt2.errors import UsageError
from gpt2.model.gpt import GPT, GPTConfig
from gpt2.run import batch_probe
from gpt2.run.batch_probe import auto_batch_size, fits_by_trial, largest_fitting
from gpt2.run.batch_size import plan_batch
from gpt2.train import main
from lib.trackers.journal import journal_path, read_journal

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def training(batch_size=8, steps=1, total=0, auto=False):
    return SimpleNamespace(batch_size=batch_size, gradient_accumulation_steps=steps, total_batch_tokens=total,
                           batch_size_auto=auto)


# ----------------------------------------------------------------------
# TOTAL_BATCH_TOKENS


def test_the_124m_total_gives_nanogpts_accumulation_on_1_and_8_gpus():
    one, eight = (plan_batch(training(12, total=491_520), 1024, world) for world in (1, 8))
    assert (one.batch_size, one.micro_steps, one.tokens_per_iter) == (12, 40, 491_520)
    assert (eight.batch_size, eight.micro_steps, eight.tokens_per_iter) == (12, 5, 491_520)
    assert eight.describe() == "491,520 tokens/iter = 12 batch x 1024 block x 40 accumulation (5 per process x 8 processes)"


def test_accumulation_steps_keep_todays_meaning_and_the_tiny_default_starts_on_2_processes():
    assert plan_batch(training(8, steps=4), 128, 2) == plan_batch(training(8, steps=4), 128, 2)
    kept = plan_batch(training(8, steps=4), 128, 2)
    assert (kept.batch_size, kept.micro_steps, kept.tokens_per_iter) == (8, 2, 4096)
    # The tiny default, 8 x 128 x 1 on 2 processes: the same 1,024 tokens, 4 sequences each.
    tiny = plan_batch(training(8, steps=1), 128, 2)
    assert (tiny.batch_size, tiny.micro_steps, tiny.tokens_per_iter) == (4, 1, 1024)


def test_a_total_that_does_not_divide_names_the_nearest_totals_that_do():
    with pytest.raises(UsageError) as error:
        plan_batch(training(12, total=500_000), 1024, 8)
    # Multiples of 1024 x 8 = 8,192 around 500,000: 61 and 62 of them.
    assert str(error.value) == (
        "--total-batch-tokens 500,000 does not split into whole 1024-token sequences on 8 processes; "
        "use 499,712 or 507,904 (a multiple of 1024 block x 8; multiples of 98,304 keep micro-batches of 12)"
    )
    # A divisible total with a micro-batch that does not divide it: the largest that does.
    odd = plan_batch(training(12, total=1024 * 7), 1024, 1)
    assert (odd.batch_size, odd.micro_steps) == (7, 1)


def test_accumulation_steps_beside_a_total_are_refused_not_ignored():
    with pytest.raises(UsageError) as error:
        plan_batch(training(32, steps=32, total=491_520), 1024, 8)
    assert str(error.value) == (
        "--gradient-accumulation-steps 32 has no effect while --total-batch-tokens 491,520 sets the step (the "
        "accumulation is derived from it); give one of them: --total-batch-tokens 0 to count accumulation steps"
    )
    # In Kconfig the option depends on TOTAL_BATCH_TOKENS = 0: a sweep over a
    # preset with a total refuses it, and a .config with a total writes none.
    from lib.kconfig import ConfigError
    from scripts.experiments.sweep_plan import parse_command_line, point_config

    sweep = parse_command_line("gpt2", "GRADIENT_ACCUMULATION_STEPS=32", "1", "")
    with pytest.raises(ConfigError, match="GRADIENT_ACCUMULATION_STEPS has no effect .* TOTAL_BATCH_TOKENS = 0"):
        point_config(sweep, {"GRADIENT_ACCUMULATION_STEPS": "32"})


def torchrun(data_dir, input_path, out_dir, *flags, processes=2):
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes),
        "gpt2/train.py", *TINY, *shakespeare_flags(data_dir, input_path), "--cpu-matmul", "blas",
        "--out-dir", str(out_dir), "--json-output", str(out_dir / "metrics.json"), *flags,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def losses(text):
    """[(kind, step, loss)] of the iter and eval lines (eval: val loss)."""
    found = [("iter", int(n), float(v)) for n, v in re.findall(r"^iter (\d+) \| loss ([\d.]+)", text, re.M)]
    found += [("eval", int(n), float(v)) for n, v in re.findall(r"^eval (\d+) \| train [\d.]+ \| val ([\d.]+)", text, re.M)]
    return found


def test_one_config_trains_the_same_on_1_and_2_processes(shakespeare_data, shakespeare_path, tmp_path):
    # 256 tokens = 8 sequences of 32 per step: 2 micro-batches of 4 on one
    # process, 1 of 4 on each of two.
    flags = ["--total-batch-tokens", "256", "--max-iters", "3", "--eval-interval", "3", "--learning-rate", "3e-3"]
    one = torchrun(shakespeare_data, shakespeare_path, tmp_path / "one", *flags, processes=1)
    two = torchrun(shakespeare_data, shakespeare_path, tmp_path / "two", *flags)
    assert "256 tokens/iter = 4 batch x 32 block x 2 accumulation" in one
    assert "256 tokens/iter = 4 batch x 32 block x 2 accumulation (1 per process x 2 processes)" in two
    a, b = losses(one), losses(two)
    assert [(kind, step) for kind, step, _ in a] == [("iter", 1), ("iter", 2), ("iter", 3), ("eval", 0), ("eval", 3)]
    assert [(kind, step) for kind, step, _ in a] == [(kind, step) for kind, step, _ in b]
    for (_, _, x), (_, _, y) in zip(a, b):
        assert abs(x - y) <= 2e-4, (a, b)
    metrics = [json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("one", "two")]
    assert metrics[0]["final_val_loss"] == pytest.approx(metrics[1]["final_val_loss"], abs=1e-5)
    assert metrics[0]["final_val_loss"] < losses(one)[0][2]  # it trained


def test_the_tiny_default_accumulation_starts_on_2_processes(shakespeare_data, shakespeare_path, tmp_path):
    out = torchrun(shakespeare_data, shakespeare_path, tmp_path / "out", "--max-iters", "1", "--eval-interval", "1",
                   "--batch-size", "8", "--gradient-accumulation-steps", "1")
    assert "256 tokens/iter = 4 batch x 32 block x 2 accumulation (1 per process x 2 processes)" in out
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["iterations"] == 1


# ----------------------------------------------------------------------
# BATCH_SIZE_AUTO with an injected out-of-memory error


def oom_above(limit, calls):
    """A trial step that runs out of memory above `limit` sequences."""

    def trial(size):
        calls.append(size)
        if size > limit:
            raise torch.cuda.OutOfMemoryError(f"injected: {size} > {limit}")

    return trial


def test_the_search_doubles_then_backs_off_to_the_largest_size_that_fits():
    calls = []
    assert largest_fitting(fits_by_trial(oom_above(37, calls))) == 37
    assert calls == [1, 2, 4, 8, 16, 32, 64, 48, 40, 36, 38, 37]
    assert largest_fitting(fits_by_trial(oom_above(5, [])), upper=4) == 4  # never above the step's sequences
    assert largest_fitting(fits_by_trial(oom_above(0, []))) == 0


class TwoRanks:
    """A Distributed as rank 0 of 2 sees it, the other rank fitting `other`."""

    enabled, world_size, rank, is_main = True, 2, 0, True

    def __init__(self, other):
        self.other = other

    def gather(self, obj):
        return [obj, self.other]

    def check_all(self, problem):
        if problem:
            raise UsageError(problem)


def cfg(auto=True):
    model = SimpleNamespace(gpt_config=lambda: GPTConfig(block_size=32, n_layer=2, n_head=2, n_embd=32))
    return SimpleNamespace(training=training(batch_size=4, auto=auto), model=model)


def test_every_rank_takes_the_smallest_size_and_the_run_records_it():
    lines = []
    size, record = auto_batch_size(cfg(), SimpleNamespace(dtype="float32"), TwoRanks(other=20), torch.device("cpu"),
                                   lines.append, trial=oom_above(37, []))
    assert size == 20 and record["batch_size"] == 20 and record["per_rank"] == [37, 20]
    assert record["tried"]["64"] is False and record["tried"]["37"] is True
    assert "batch size auto: 20 sequences per micro-batch" in lines[0] and "(37, 20)" in lines[0]
    # On the CPU without a trial: the configured BATCH_SIZE.
    size, record = auto_batch_size(cfg(), SimpleNamespace(dtype="float32"), TwoRanks(other=20), torch.device("cpu"),
                                   lines.append)
    assert size is None and record == {"auto": True, "probed": False, "batch_size": 4}
    assert auto_batch_size(cfg(auto=False), None, None, torch.device("cpu"), lines.append) == (None, None)


def test_not_even_one_sequence_fitting_is_one_line_with_the_memory_needed():
    with pytest.raises(UsageError) as error:
        auto_batch_size(cfg(), SimpleNamespace(dtype="float32"), TwoRanks(other=20), torch.device("cpu"),
                        print, trial=oom_above(0, []))
    message = str(error.value)
    assert "\n" not in message and message.startswith("--batch-size-auto: not even a micro-batch of 1 fits")
    assert re.search(r"needs about \d+\.\d GiB", message) and "--activation-checkpointing" in message


def test_a_run_with_auto_trains_with_the_probed_size_and_records_it(
    shakespeare_data, shakespeare_path, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(run_setup, "auto_batch_size", functools.partial(batch_probe.auto_batch_size,
                                                                         trial=oom_above(3, [])))
    out = tmp_path / "out"
    argv = [*TINY, *shakespeare_flags(shakespeare_data, shakespeare_path), "--batch-size-auto",
            "--max-iters", "1", "--eval-interval", "1", "--out-dir", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "batch size auto: 3 sequences per micro-batch" in printed and "96 tokens/iter = 3 batch x 32 block" in printed
    record = read_journal(journal_path(out))[0]["config"]["provenance"]["batch_size_auto"]
    assert record["batch_size"] == 3 and record["probed"] is True


# ----------------------------------------------------------------------
# ACTIVATION_CHECKPOINTING


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_activation_checkpointing_gives_the_same_loss_and_gradients(dropout):
    results = []
    for recompute in (False, True):
        torch.manual_seed(0)
        model = GPT(GPTConfig(block_size=16, vocab_size=64, n_layer=2, n_head=2, n_embd=16, dropout=dropout,
                              activation_checkpointing=recompute))
        x = torch.randint(64, (3, 16), generator=torch.Generator().manual_seed(1))
        torch.manual_seed(2)  # the same dropout draws
        loss = model(x, x)[1]
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (loss_a, grads_a), (loss_b, grads_b) = results
    torch.testing.assert_close(loss_b, loss_a, rtol=0, atol=1e-6)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], rtol=1e-5, atol=1e-7, msg=name)


def test_a_finished_runs_tokens_per_step_come_from_its_recorded_flags():
    from gpt2.run.batch_size import recorded_tokens_per_iter

    # The 124M preset: a total; its batch size and accumulation steps do not count.
    assert recorded_tokens_per_iter({"total_batch_tokens": 491_520, "batch_size": 12, "block_size": 1024,
                                     "gradient_accumulation_steps": 1}) == 491_520
    assert recorded_tokens_per_iter({"total_batch_tokens": 0, "batch_size": 4, "block_size": 32,
                                     "gradient_accumulation_steps": 3}) == 384
    assert recorded_tokens_per_iter({"batch_size": 4}) is None
