"""The CPU fast paths, attached to one model explicitly at run setup.

Two of them, both measured in docs/benchmarks.md, both giving the plain
model's loss and gradients up to float rounding (tests/test_fast_paths.py):

  * oneDNN matrix multiplies: the model's nn.Linear layers swapped for
    gpt2/cpu/matmul.py's OneDNNLinear (2.2x the products of MKL on AVX-512
    AMD CPUs), when --cpu-matmul picked "onednn";
  * the chunked loss: model.output_loss set to gpt2/cpu/linear_cross_entropy.py's
    ChunkedLoss, through the same library, so the full logits never exist
    (half the peak memory at the same speed).

Only the model passed in changes: a second GPT in the same process computes
exactly as before, so tests and tools that build several models never
depend on which was set up first.
"""

from gpt2.cpu.matmul import swap_linears
from gpt2.cpu.linear_cross_entropy import ChunkedLoss


def use_cpu_fast_paths(model, matmul, chunked_loss):
    """Make `model` (a GPT, unwrapped: not compiled, not DDP) compute its
    Linear layers through `matmul` ("blas": plain nn.Linear, or "onednn"),
    and its loss chunked through the same library when `chunked_loss`,
    else the plain F.cross_entropy over full logits.  Calling it again
    replaces the earlier choice.  Returns `model`."""
    swap_linears(model, matmul)
    model.output_loss = ChunkedLoss(matmul) if chunked_loss else None
    return model
