"""A pruning run's best.pt is its best model at the target sparsity, not a
denser one from before the ramp ended (gpt2/run/trainer.py)."""

import re

import pytest
import torch

from gpt2.train import main as train_main
from train_support import TINY, shakespeare_flags


def test_best_checkpoint_of_a_pruning_run_is_at_the_target_sparsity(shakespeare_data, shakespeare_path, tmp_path,
                                                                      capsys):
    out = tmp_path / "run"
    # Dense for 5 steps, then 90% at once (masks from step 6 on): evals 2 and
    # 4 are dense, 6 and 8 at the target.
    assert train_main([*TINY, *shakespeare_flags(shakespeare_data, shakespeare_path), "--out-dir", str(out),
                       "--max-iters", "8", "--eval-interval", "2", "--sample-interval", "0", "--learning-rate", "3e-3",
                       "--pruning-method", "magnitude", "--target-sparsity", "0.9", "--pruning-warmup", "4",
                       "--pruning-ramp-iters", "1", "--pruning-interval", "1"]) == 0
    val = {int(i): float(v) for i, v in re.findall(r"^eval (\d+) \| train \S+ \| val (\S+)", capsys.readouterr().out, re.M)}
    assert sorted(val) == [0, 2, 4, 6, 8]
    # The case this is about: a dense evaluation scored better than any pruned one.
    assert min(val[2], val[4]) < min(val[6], val[8]), val
    best = torch.load(out / "best.pt", weights_only=True)
    assert best["iter_num"] in (6, 8) and best["best_val_loss"] == pytest.approx(min(val[6], val[8]), abs=5e-5)  # printed to 4 decimals
    weights = [w for name, w in best["model"].items() if name.endswith(("attn.weight", "fc.weight", "proj.weight"))]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert abs(zeros - 0.9) < 0.01, zeros
