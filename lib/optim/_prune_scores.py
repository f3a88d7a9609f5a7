"""AdamWPrune's importance scores: today's `fisher` and AdamWPrune's bitter0..bitter9.

Not an optimizer (its name starts with "_", so the registry skips it);
lib/optim/adamwprune.py picks one with --adamwprune-variant.  A score maps a
weight `w` and its AdamW state (`m` = exp_avg, `v` = exp_avg_sq, both as
torch keeps them: not bias-corrected) to one number per entry, higher =
keep.  Which entries go is decided by lib/pruning (the lowest round(s * n)
of each tensor, see lib/pruning/__init__.py).

The bitter scores are reimplemented from mcgrof/AdamWPrune at commit 0a0fda9
(lib/optimizers.py, update_adamprune_masks(); docs/adamwprune_variants.md).
Where the documentation and the code disagree, these follow the code, and
each docstring says how they differ.  "Reported" is docs/adamwprune_variants.md's
result for GPT-2 124M on FineWeb-Edu at 50% sparsity (lower perplexity is
better; movement pruning's 44.15 is its baseline).  Every bitter score falls
back to |w| while the tensor has no AdamW state yet (no step taken), as the
source does; fisher falls back to w^2.

Source-wide differences from gpt2lab (not in any one score): the source
selects with one global threshold over all layers (except bitter4) found by
sampling 2% of the scores, prunes the tied lm_head / embedding too, masks
gradients and Adam's moments as well as weights, and uses a cubic
(progress^3) ramp for every variant; gpt2lab selects exactly per tensor
and leaves the embedding alone; the ramp is --pruning-schedule.
"""

import torch

EPS = 1e-8  # the source's eps for every float32 score


def fisher(w, m, v):
    """gpt2lab's score before the variants (the default): w^2 * v.

    The Optimal Brain Damage saliency 0.5 * H_ii * w^2 with the Hessian
    diagonal replaced by the empirical Fisher E[g^2] = exp_avg_sq (see
    lib/optim/adamwprune.py).  Not in AdamWPrune; no reported result.
    """
    score = w.float().square()
    return score if v is None else score.mul_(v)


def bitter0(w, m, v):
    """Hybrid momentum-stability: |w * m| * |w| / (sqrt(v) + 1e-8).

    Reported: ~51.51 perplexity (the worst of the family; the source's
    argument that complex scores lose).  Docs and code agree.
    """
    if m is None or v is None:
        return w.abs()
    return (w * m).abs() * (w.abs() / (v.sqrt() + EPS))


def bitter1(w, m, v):
    """Pure magnitude: |w|.  Reported: ~42.10 perplexity at 10,000 iterations."""
    return w.abs()


def bitter2(w, m, v):
    """Magnitude again, |w|, meant to be run with 21% more iterations.

    The source raises max_iters from 10,000 to 12,100 by itself when bitter2
    is chosen (gpt2/trainers/vanilla.py); gpt2lab changes no budget behind
    the user's back: set MAX_ITERS.  Reported: ~46.07 perplexity at 12,100.
    """
    return w.abs()


def bitter3(w, m, v):
    """Gradient-magnitude: |w| * sqrt(|m| + 1e-8).

    The docs write |w| * sqrt(|m|): the code adds 1e-8 under the root.  The
    source runs it with a cubic ramp (--pruning-schedule cubic) and 13,000
    iterations instead of 10,000.  Reported: ~42-44 perplexity.
    """
    if m is None:
        return w.abs()
    return w.abs() * (m.abs() + EPS).sqrt()


def bitter4(w, m, v):
    """bitter3's score, |w| * sqrt(|m| + 1e-8), with layer-adaptive targets.

    The variant is defined by its sparsity distribution, not its score:
    per-layer targets 0.7x (first prunable layer) rising linearly to 1.3x
    (last), capped at 0.95, so adamwprune refuses bitter4 without
    --pruning-layer-adaptive (lib/pruning/state.py).  The source counts
    "layers" as its nn.Linear modules in module order (four per GPT-2 block),
    not as blocks; so does gpt2lab.  Cubic ramp, 13,000 iterations in the
    source.  Reported: ~40-42 perplexity.
    """
    return bitter3(w, m, v)


def bitter5(w, m, v):
    """Movement-to-zero, as the code computes it: sign(w) * m / (sqrt(v) + 1e-8) + 0.1 * |w|.

    Code and docs disagree in sign.  The docs give
    -sign(w) * m / sqrt(v) + 0.1 |w| (low, so pruned, for a weight Adam pushes
    towards zero: its update -lr * m / sqrt(v) has the sign opposite to w
    exactly when sign(w) * m > 0).  The code computes
    movement = -(sign(w) * m) / (sqrt(v) + eps) and then scores -movement +
    0.1 |w|, which is high for exactly those weights, so it keeps what the
    docs say it prunes.  Followed: the code.  Reported: none ("not
    extensively tested").
    """
    if m is None or v is None:
        return w.abs()
    movement = -(w.sign() * m) / (v.sqrt() + EPS)
    return -movement + w.abs() * 0.1


def bitter6(w, m, v):
    """Coherence-weighted gradient-magnitude: |w| * sqrt(|m| + 1e-8) * sqrt(m^2 / (v + 1e-8)).

    Docs and code agree (the docs leave the eps out).  Reported: none.
    """
    if m is None or v is None:
        return w.abs()
    coherence = (m.square() / (v + EPS)).sqrt()
    return w.abs() * (m.abs() + EPS).sqrt() * coherence


def bitter7(w, m, v):
    """Conservative variance-based: |w| * (|v| + 1e-8)^0.25.

    The docs write |w| * (v^0.25 + eps): the code adds eps inside the fourth
    root.  Reported: 37.28 perplexity at 7,000 iterations (the best; 15.6%
    below movement pruning's 44.15), sparsity 49.96% at a 50% target.
    """
    if v is None:
        return w.abs()
    return w.abs() * (v.abs() + EPS) ** 0.25


def bitter8(w, m, v):
    """As the code computes it: bitter7 in float16, |w| * rsqrt(rsqrt(|v| + 1e-5)).

    Code and docs disagree completely.  The docs call bitter8
    "bias-corrected gradient-magnitude", |w| * sqrt(|m / (1 - beta1^t)|);
    the code computes bitter7's fourth root of v in float16 (w and v cast
    to float16, eps 1e-5, the fourth root as two reciprocal square roots,
    the "Doom" trick), the product cast back to float32.  Followed: the code,
    so bitter8 ranks like bitter7 up to float16 rounding (and the larger eps).
    Reported: 40.94 perplexity at 2,500 iterations (7.3% below 44.15).
    """
    if v is None:
        return w.abs()
    v_half = v.to(torch.float16).abs() + 1e-5
    return (w.to(torch.float16).abs() * torch.rsqrt(torch.rsqrt(v_half))).float()


def bitter9(w, m, v):
    """As the code computes it: bitter8's float16 score, which the source wraps in torch.compile.

    The docs call bitter9 a "hybrid multi-signal" score,
    |w| * sqrt(|m|) - 0.1 * movement_to_zero; the code computes bitter8's
    formula in a torch.compile'd function, a speed change only.  Followed:
    the code, run eagerly here (a compiled kernel may skip float16 rounding
    between the ops, so the two can differ in the last bits).  Reported:
    "Failed" (no number).
    """
    return bitter8(w, m, v)


SCORES = {f.__name__: f for f in (fisher, bitter0, bitter1, bitter2, bitter3, bitter4, bitter5,
                                  bitter6, bitter7, bitter8, bitter9)}  # fmt: skip
