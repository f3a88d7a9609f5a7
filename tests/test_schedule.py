"""gpt2/run/schedule.py: each --lr-schedule against a hand computation, the
Kconfig choice and the registry agree, and a run follows the chosen one."""

import math
import re

import pytest

from gpt2.run.schedule import SCHEDULES, build_schedule
from gpt2.train import main
from lib.kconfig import load_tree
from lib.options import options
from train_support import TINY, shakespeare_flags

SHAPE = dict(max_lr=1.0, min_lr=0.1, warmup_iters=10, decay_iters=100, decay_fraction=0.2)


def wsd(iteration, shape):
    return SCHEDULES["wsd"](iteration, **SHAPE, decay_shape=shape)


def test_wsd_warms_up_holds_the_peak_then_decays_over_the_last_fraction():
    for shape in ("linear", "1-sqrt"):
        assert wsd(0, shape) == pytest.approx(1 / 11) and wsd(9, shape) == pytest.approx(10 / 11)
        assert [wsd(i, shape) for i in (10, 50, 80)] == [1.0, 1.0, 1.0]  # decay starts at 100 - 20
        assert wsd(100, shape) == 0.1 and wsd(1000, shape) == 0.1
    # a quarter of the decay done (iteration 85 of 80..100)
    assert wsd(85, "linear") == pytest.approx(0.1 + 0.9 * 0.75)
    assert wsd(85, "1-sqrt") == pytest.approx(0.1 + 0.9 * (1 - math.sqrt(0.25)))
    decay = [wsd(i, "1-sqrt") for i in range(80, 101)]
    assert decay == sorted(decay, reverse=True)


def test_constant_holds_the_peak_after_warmup_and_cosine_is_unchanged():
    assert [SCHEDULES["constant"](i, **SHAPE, decay_shape="linear") for i in (9, 10, 100, 10**6)] == [
        pytest.approx(10 / 11), 1.0, 1.0, 1.0]  # fmt: skip
    cosine = SCHEDULES["cosine"]
    assert cosine(55, **SHAPE, decay_shape="linear") == pytest.approx(0.1 + 0.9 * 0.5)  # halfway: cos = 0
    assert cosine(100, **SHAPE, decay_shape="linear") == 0.1


def test_every_kconfig_schedule_is_registered_and_the_default_is_cosine():
    by_dest = {option.dest: option for option in options(load_tree())}
    assert sorted(by_dest["lr_schedule"].values) == sorted(SCHEDULES)
    assert by_dest["lr_schedule"].default(load_tree()) == "cosine"
    assert by_dest["lr_decay_shape"].values == ("linear", "1-sqrt")


def test_a_run_follows_the_wsd_schedule(shakespeare_data, shakespeare_path, tmp_path, capsys):
    argv = [*TINY, *shakespeare_flags(shakespeare_data, shakespeare_path), "--out-dir", str(tmp_path),
            "--max-iters", "10", "--eval-interval", "10", "--sample-interval", "0", "--lr-schedule", "wsd",
            "--lr-decay-fraction", "0.5", "--lr-decay-shape", "linear", "--learning-rate", "1e-3", "--min-lr", "1e-4"]
    assert main(argv) == 0
    lrs = [float(lr) for lr in re.findall(r"^iter \d+ \| loss \S+ \| lr (\S+)", capsys.readouterr().out, re.M)]
    # step i's line shows the lr of step i - 1: warmup 2 (1/3, 2/3), peak until 5, then 1e-3 -> 1e-4 over 5 steps
    training = type("T", (), dict(lr_schedule="wsd", learning_rate=1e-3, min_lr=1e-4, warmup_iters=2,
                                  decay_iters=10, lr_decay_fraction=0.5, lr_decay_shape="linear"))
    assert lrs == [pytest.approx(float(f"{build_schedule(training, training.learning_rate)(i):.2e}")) for i in range(10)]
    assert lrs[2:5] == [1e-3] * 3 and lrs[5] == pytest.approx(1e-3) and lrs[9] == pytest.approx(2.8e-4)
