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
freed memory is kept for reuse (gpt2/cpu/allocator.py); without that, 18%
faster steps, because every fresh 206 MB tensor is page-faulted in again.

The three products of a chunk go through the library the caller names:
torch.mm ("blas"), or oneDNN ("onednn", gpt2/cpu/matmul.py: about 1.9x
faster products on AVX-512 AMD CPUs) where its tensors allow.  Same value
and gradients as the plain way up to float rounding, either way
(tests/test_fast_paths.py); used for training and evaluation on CPU, as a
model's output_loss (gpt2/cpu/fast_paths.py, decided by gpt2/run/setup.py),
where the logits themselves are never needed.
"""

from dataclasses import dataclass

import torch

from gpt2.cpu import matmul as cpu_matmul

# Elements of one chunk of logits: 25.8M floats = 103 MB, i.e. 512 rows of
# GPT-2's padded vocabulary.  Measured on 2 cores (docs/benchmarks.md, 4
# layers x 256 wide, 1,024 tokens per step): 128-row chunks 670-710 ms per
# step, 256 rows 600-620, 512 rows 585-600, all 1,024 rows at once 585-595;
# the three matrix multiplies of a chunk run at 190-200 GFLOP/s from 512
# rows on, and smaller ones pay more per call than they gain in cache.
CHUNK_ELEMENTS = 512 * 50304
# BLAS: the forward multiply writes its logits in blocks of columns of about
# this many elements (2 MB, one core's L2 cache here): 512 x 1,024 blocks ran
# at 195 GFLOP/s, one 512 x 50,304 multiply at 170 (MKL, same machine).
FORWARD_BLOCK_ELEMENTS = 512 * 1024
# oneDNN: the weight gradient is taken a block of vocabulary columns at a
# time, of about this many elements.  oneDNN wants contiguous operands, so
# each block of the logit gradient is transposed first; a 2 MB block
# (512 rows x 1,024 columns) is transposed in cache, the whole chunk (103 MB)
# at memory speed: 24 vs 59 ms per step (4 layers x 256 wide).
ONEDNN_GRAD_BLOCK_ELEMENTS = 512 * 1024


def default_chunk_rows(vocab_size):
    """Rows per chunk so that a chunk of logits holds about CHUNK_ELEMENTS."""
    return max(1, CHUNK_ELEMENTS // vocab_size)


class _BlasProducts:
    """The three products of a chunk through torch.mm, into buffers reused
    by every chunk (a fresh 100 MB each time would be page-faulted in each
    time)."""

    def __init__(self, weight, chunk_rows):
        self.weight = weight
        self.buffer = weight.new_empty(chunk_rows, weight.size(0))
        self.block_cols = max(1, FORWARD_BLOCK_ELEMENTS // chunk_rows)

    def logits(self, h):
        out = self.buffer[: len(h)]
        for col in range(0, self.weight.size(0), self.block_cols):
            cols = slice(col, col + self.block_cols)
            torch.mm(h, self.weight[cols].t(), out=out[:, cols])
        return out

    def grad_hidden(self, grad_logits, out):
        torch.mm(grad_logits, self.weight, out=out)

    def grad_weight(self, grad_logits, h, out, accumulate):
        if accumulate:
            out.addmm_(grad_logits.t(), h)
        else:
            torch.mm(grad_logits.t(), h, out=out)


def _transposed(matrix, block_rows=256):
    """matrix.t().contiguous(), a block of rows at a time: 256 x 256 floats
    stay in cache while they are turned (7 instead of 11 ms for the
    50,304 x 256 output weight)."""
    out = matrix.new_empty(matrix.size(1), matrix.size(0))
    for row in range(0, matrix.size(0), block_rows):
        out[:, row : row + block_rows] = matrix[row : row + block_rows].t()
    return out


class _OneDNNProducts:
    """The same products through oneDNN (gpt2/cpu/matmul.py), which returns
    new tensors (the allocator setting of gpt2/cpu/allocator.py keeps their
    memory mapped) and copies transposed operands: the weight is transposed
    once per call and shared by every chunk, the logit gradient in
    cache-sized blocks."""

    def __init__(self, weight, want_grads):
        self.weight = weight
        self.weight_t = _transposed(weight) if want_grads else None

    def logits(self, h):
        return cpu_matmul.linear_product(h, self.weight)

    def grad_hidden(self, grad_logits, out):
        out.copy_(cpu_matmul.linear_product(grad_logits, self.weight_t))

    def grad_weight(self, grad_logits, h, out, accumulate):
        h_t = h.t().contiguous()
        block_cols = max(1, ONEDNN_GRAD_BLOCK_ELEMENTS // len(h))
        for col in range(0, self.weight.size(0), block_cols):
            cols = slice(col, col + block_cols)
            block = cpu_matmul.linear_product(grad_logits[:, cols].t().contiguous(), h_t)
            if accumulate:
                out[cols] += block
            else:
                out[cols] = block


class _LinearCrossEntropy(torch.autograd.Function):
    """mean_i cross_entropy(hidden[i] @ weight.T, targets[i]), gradients
    computed in forward (see the module docstring)."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk_rows, want_grads, matmul):
        rows = hidden.size(0)
        grad_hidden = torch.empty_like(hidden) if want_grads else None
        grad_weight = torch.empty_like(weight) if want_grads else None
        loss_sum = torch.zeros((), dtype=hidden.dtype, device=hidden.device)
        if matmul == "onednn" and cpu_matmul.can_take(hidden, weight):
            products = _OneDNNProducts(weight, want_grads)
        else:
            products = _BlasProducts(weight, min(rows, chunk_rows))
        for start in range(0, rows, chunk_rows):
            chunk = slice(start, start + chunk_rows)
            h, t = hidden[chunk], targets[chunk]
            picked = torch.arange(len(t), device=t.device)
            log_probs = products.logits(h)
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
            products.grad_hidden(grad_logits, grad_hidden[chunk])
            products.grad_weight(grad_logits, h, grad_weight, accumulate=start > 0)
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
        return grad_hidden.mul_(scale), grad_weight.mul_(scale), None, None, None, None


def linear_cross_entropy(hidden, weight, targets, chunk_rows=None, matmul="blas"):
    """F.cross_entropy(hidden @ weight.T, targets) (mean over rows) without
    materialising the logits.  hidden: (rows, width); weight: (vocab, width);
    targets: (rows,) class ids; matmul: "blas" (torch.mm) or "onednn" (for
    float32 CPU tensors; others take torch.mm).  Runs in float32 at least,
    even under autocast: the softmax over 50k ids needs it (float64 stays
    float64)."""
    cpu_matmul.check_library(matmul)
    chunk_rows = chunk_rows or default_chunk_rows(weight.size(0))
    dtype = torch.promote_types(torch.promote_types(hidden.dtype, weight.dtype), torch.float32)
    # Decided here: inside forward grad mode is always off, and
    # ctx.needs_input_grad is true under torch.no_grad() too (the weight
    # still requires grad), which made every evaluation compute gradients.
    want_grads = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    with torch.autocast(device_type=hidden.device.type, enabled=False):
        return _LinearCrossEntropy.apply(hidden.to(dtype), weight.to(dtype), targets, chunk_rows, want_grads, matmul)


@dataclass(frozen=True)
class ChunkedLoss:
    """linear_cross_entropy with its matmul library (and chunk size) fixed:
    a callable (hidden_rows, weight, target_rows) -> loss, the shape of
    GPT.output_loss (gpt2/model/gpt.py)."""

    matmul: str = "blas"
    chunk_rows: int | None = None

    def __post_init__(self):
        cpu_matmul.check_library(self.matmul)

    def __call__(self, hidden, weight, targets):
        return linear_cross_entropy(hidden, weight, targets, chunk_rows=self.chunk_rows, matmul=self.matmul)
