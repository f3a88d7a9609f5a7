"""Output projection and cross-entropy in one step, a chunk of rows at a time.

The plain way, F.cross_entropy(hidden @ weight.T, targets), materialises the
(tokens x vocab) logits: 1,024 tokens x 50,304 ids = 206 MB in float32, then
its log-softmax, and in backward the gradients of both, the same size again.

Here the rows are taken `chunk_rows` at a time: logits of the chunk, its
log-softmax in place, the loss of its rows, and straight away the gradient
(softmax minus one-hot) multiplied into the hidden-state and weight
gradients.  The chunk buffer is the only large temporary; the gradient is
computed during the forward pass (as Liger-Kernel's fused linear
cross-entropy does), so nothing is recomputed and backward only scales.

What it gives on a CPU (docs/benchmarks.md): about 0.9 GB less peak memory
at 1,024 tokens per step (it grows with the batch), at the same speed once
freed memory is kept for reuse (gpt2/cpu_allocator.py); without that, 18%
faster steps, because every fresh 206 MB tensor is page-faulted in again.

Same value and gradients as the plain way up to float rounding
(tests/test_fast_paths.py); used for training and evaluation on
CPU (gpt2/run_setup.py decides), where the logits themselves are never needed.
"""

import torch

# Elements of one chunk of logits: 25.8M floats = 103 MB, i.e. 512 rows of
# GPT-2's padded vocabulary.  Measured on 2 cores (docs/benchmarks.md, 4
# layers x 256 wide, 1,024 tokens per step): 128-row chunks 670-710 ms per
# step, 256 rows 600-620, 512 rows 585-600, all 1,024 rows at once 585-595;
# the three matrix multiplies of a chunk run at 190-200 GFLOP/s from 512
# rows on, and smaller ones pay more per call than they gain in cache.
CHUNK_ELEMENTS = 512 * 50304
# The forward multiply writes its logits in blocks of columns of about this
# many elements (2 MB, one core's L2 cache here): 512 x 1,024 blocks ran at
# 195 GFLOP/s, one 512 x 50,304 multiply at 170 (MKL, same machine).
FORWARD_BLOCK_ELEMENTS = 512 * 1024


def default_chunk_rows(vocab_size):
    """Rows per chunk so that a chunk of logits holds about CHUNK_ELEMENTS."""
    return max(1, CHUNK_ELEMENTS // vocab_size)


class _LinearCrossEntropy(torch.autograd.Function):
    """mean_i cross_entropy(hidden[i] @ weight.T, targets[i]), gradients
    computed in forward (see the module docstring)."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk_rows):
        rows = hidden.size(0)
        want_grads = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        grad_hidden = torch.empty_like(hidden) if want_grads else None
        grad_weight = torch.empty_like(weight) if want_grads else None
        loss_sum = torch.zeros((), dtype=hidden.dtype, device=hidden.device)
        # One buffer for every chunk (a fresh 100 MB each time would be
        # page-faulted in each time).
        vocab = weight.size(0)
        buffer = hidden.new_empty(min(rows, chunk_rows), vocab)
        block_cols = max(1, FORWARD_BLOCK_ELEMENTS // min(rows, chunk_rows))
        for start in range(0, rows, chunk_rows):
            h, t = hidden[start : start + chunk_rows], targets[start : start + chunk_rows]
            picked = torch.arange(len(t), device=t.device)
            log_probs = buffer[: len(t)]
            for col in range(0, vocab, block_cols):
                torch.mm(h, weight[col : col + block_cols].t(), out=log_probs[:, col : col + block_cols])
            # log_softmax reads each row in full before writing it, so it
            # can overwrite its input.
            torch.log_softmax(log_probs, dim=1, out=log_probs)
            loss_sum -= log_probs[picked, t].sum()
            if not want_grads:
                continue
            # d(loss_i)/d(logits_i) = softmax_i - onehot(t_i); the 1/rows of
            # the mean is applied in backward, together with grad_output.
            grad_logits = log_probs.exp_()
            grad_logits[picked, t] -= 1.0
            torch.mm(grad_logits, weight, out=grad_hidden[start : start + chunk_rows])
            if start == 0:
                torch.mm(grad_logits.t(), h, out=grad_weight)
            else:
                grad_weight.addmm_(grad_logits.t(), h)
        ctx.rows = rows
        ctx.save_for_backward(grad_hidden, grad_weight)
        return loss_sum / rows

    @staticmethod
    def backward(ctx, grad_output):
        grad_hidden, grad_weight = ctx.saved_tensors
        scale = grad_output / ctx.rows
        # In place, saving a 51 MB copy: the graph is backpropagated once,
        # as training does (a second backward through the same graph fails
        # autograd's version check instead of returning doubled gradients).
        return grad_hidden.mul_(scale), grad_weight.mul_(scale), None, None


def linear_cross_entropy(hidden, weight, targets, chunk_rows=None):
    """F.cross_entropy(hidden @ weight.T, targets) (mean over rows) without
    materialising the logits.  hidden: (rows, width); weight: (vocab, width);
    targets: (rows,) class ids.  Runs in float32 at least, even under
    autocast: the softmax over 50k ids needs it (float64 stays float64)."""
    chunk_rows = chunk_rows or default_chunk_rows(weight.size(0))
    dtype = torch.promote_types(torch.promote_types(hidden.dtype, weight.dtype), torch.float32)
    with torch.autocast(device_type=hidden.device.type, enabled=False):
        return _LinearCrossEntropy.apply(hidden.to(dtype), weight.to(dtype), targets, chunk_rows)
