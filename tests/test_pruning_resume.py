"""AdamWPrune's variants through gpt2/train.py: each trains, checkpoints and
resumes bit-identically on the CPU (the scores themselves: tests/test_pruning.py)."""

import pytest
import torch

from gpt2.train import main as train_main
from lib.optim._prune_scores import SCORES
from lib.pruning import MASKS_FILE, load_masks
from train_support import TINY, shakespeare_flags


# --- each variant through gpt2/train.py: trains, checkpoints, resumes bit-identically ----


def argv(data, path, out_dir, max_iters, variant, *more):
    return [*TINY, *shakespeare_flags(data, path), "--out-dir", str(out_dir),
            "--max-iters", str(max_iters), "--lr-decay-iters", "4", "--eval-interval", "2",
            "--sample-interval", "0", "--seed", "7", "--dropout", "0.1", "--optimizer", "adamwprune",
            "--adamwprune-variant", variant, "--pruning-method", "state", "--pruning-schedule", "cubic",
            "--pruning-warmup", "0", "--pruning-ramp-iters", "1", "--pruning-interval", "1",
            *(["--pruning-layer-adaptive"] if variant == "bitter4" else []), *more]  # fmt: skip


@pytest.mark.parametrize("variant", sorted(SCORES))
def test_a_run_with_each_variant_resumes_bit_identically(variant, shakespeare_data, shakespeare_path, tmp_path):
    """4 steps straight, or 2 then --resume for 2 more: the same weights, masks
    and moments to the last bit.  50% is reached at the second step, before
    the checkpoint, so the resumed steps keep the pruned weights at zero only
    through the masks the checkpoint restored."""
    data = (shakespeare_data, shakespeare_path)
    assert train_main(argv(*data, tmp_path / "straight", 4, variant)) == 0
    assert train_main(argv(*data, tmp_path / "resumed", 2, variant)) == 0
    assert torch.load(tmp_path / "resumed" / "ckpt.pt", weights_only=True)["iter_num"] == 2
    assert train_main(argv(*data, tmp_path / "resumed", 4, variant, "--resume")) == 0

    straight, resumed = (torch.load(tmp_path / d / "ckpt.pt", weights_only=True) for d in ("straight", "resumed"))
    assert straight["iter_num"] == resumed["iter_num"] == 4
    for name, weight in straight["model"].items():
        assert torch.equal(weight, resumed["model"][name]), f"{variant}: {name}"
    masks = straight["optimizer"]["prune_masks"]
    assert masks and masks.keys() == resumed["optimizer"]["prune_masks"].keys()
    for index, keep in masks.items():
        assert torch.equal(keep, resumed["optimizer"]["prune_masks"][index])
    for index, state in straight["optimizer"]["state"].items():
        for moment in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(state[moment], resumed["optimizer"]["state"][index][moment]), f"{variant}: {moment}"
    # masks.pt beside the checkpoint; the mean over layers is the target (for
    # bitter4 too: 0.7x .. 1.3x of it, so not its fraction of all weights).
    per_layer = [1 - m.float().mean().item() for m in load_masks(tmp_path / "straight" / MASKS_FILE).values()]
    assert sum(per_layer) / len(per_layer) == pytest.approx(0.5, abs=1e-3)


@pytest.mark.parametrize("variant, more, changed", [
    ("bitter8", [], "--adamwprune-variant 'bitter7' -> 'bitter8'"),
    ("bitter7", ["--pruning-method", "magnitude"], "--pruning-method 'state' -> 'magnitude'"),
    ("bitter7", ["--optimizer", "adamw", "--pruning-method", "magnitude"],
     "--optimizer 'adamwprune' -> 'adamw', --pruning-method 'state' -> 'magnitude'"),
])
def test_resuming_with_another_variant_method_or_optimizer_is_refused(variant, more, changed, shakespeare_data,
                                                                      shakespeare_path, tmp_path, capsys):
    data = (shakespeare_data, shakespeare_path)
    assert train_main(argv(*data, tmp_path / "run", 2, "bitter7")) == 0
    before = (tmp_path / "run" / "ckpt.pt").read_bytes()
    capsys.readouterr()
    assert train_main(argv(*data, tmp_path / "run", 4, variant, "--resume", *more)) == 1
    assert capsys.readouterr().err == (
        f"error: --resume: the checkpoint was trained with other settings ({changed}); "
        "resume with the original flags or start a new --out-dir\n"
    )
    assert (tmp_path / "run" / "ckpt.pt").read_bytes() == before
