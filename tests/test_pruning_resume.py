"""AdamWPrune's variants through gpt2/train.py: each trains, checkpoints and
resumes bit-identically on the CPU (the scores themselves: tests/test_pruning.py)."""

import pytest
import torch

from gpt2.train import main as train_main
from lib.optim._prune_scores import SCORES
from lib.pruning import MASKS_FILE, load_masks
from train_support import TINY, shakespeare_flags


# --- each variant through gpt2/train.py: trains, checkpoints, resumes bit-identically ----


# Every score is a pure function of (w, exp_avg, exp_avg_sq), each checked
# above against its hand-computed example; what a resume restores (masks,
# moments, the schedule) is the same for all of them.  So the runs take one
# variant per path through that: the default (exp_avg_sq), one reading
# exp_avg, the layer-adaptive targets, and the float16 score.
RESUMED_VARIANTS = ("fisher", "bitter3", "bitter4", "bitter8")


def test_the_resumed_variants_cover_every_resume_path():
    assert set(RESUMED_VARIANTS) <= set(SCORES) and "fisher" in RESUMED_VARIANTS


@pytest.mark.parametrize("variant", RESUMED_VARIANTS)
def test_a_run_with_each_variant_resumes_bit_identically(variant, shakespeare_data, shakespeare_path, tmp_path):
    """4 steps straight, or 2 then --resume for 2 more: the same weights, masks
    and moments to the last bit.  50% is reached at the second step, before
    the checkpoint, so the resumed steps keep the pruned weights at zero only
    through the masks the checkpoint restored."""

    def argv(out_dir, max_iters, *more):
        return [*TINY, *shakespeare_flags(shakespeare_data, shakespeare_path), "--out-dir", str(out_dir),
                "--max-iters", str(max_iters), "--lr-decay-iters", "4", "--eval-interval", "2",
                "--sample-interval", "0", "--seed", "7", "--dropout", "0.1", "--optimizer", "adamwprune",
                "--adamwprune-variant", variant, "--pruning-method", "state", "--pruning-schedule", "cubic",
                "--pruning-warmup", "0", "--pruning-ramp-iters", "1", "--pruning-interval", "1",
                *(["--pruning-layer-adaptive"] if variant == "bitter4" else []), *more]  # fmt: skip

    assert train_main(argv(tmp_path / "straight", 4)) == 0
    assert train_main(argv(tmp_path / "resumed", 2)) == 0
    assert torch.load(tmp_path / "resumed" / "ckpt.pt", weights_only=True)["iter_num"] == 2
    assert train_main(argv(tmp_path / "resumed", 4, "--resume")) == 0

    straight, resumed = (torch.load(tmp_path / d / "ckpt.pt", weights_only=True) for d in ("straight", "resumed"))
    assert straight["iter_num"] == resumed["iter_num"] == 4
    for name, weight in straight["model"].items():
        assert torch.equal(weight, resumed["model"][name]), f"{variant}: {name}"
    masks = straight["optimizer"]["prune_masks"]
    assert masks and masks.keys() == resumed["optimizer"]["prune_masks"].keys()
    for index, keep in masks.items():
        assert torch.equal(keep, resumed["optimizer"]["prune_masks"][index])
    for index, state in straight["optimizer"]["state"].items():
        assert torch.equal(state["exp_avg_sq"], resumed["optimizer"]["state"][index]["exp_avg_sq"])
    # masks.pt beside the checkpoint; the mean over layers is the target (for
    # bitter4 too: 0.7x .. 1.3x of it, so not its fraction of all weights).
    per_layer = [1 - m.float().mean().item() for m in load_masks(tmp_path / "straight" / MASKS_FILE).values()]
    assert sum(per_layer) / len(per_layer) == pytest.approx(0.5, abs=1e-3)
