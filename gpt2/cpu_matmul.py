"""float32 matrix multiplies on CPU through oneDNN instead of torch.mm's BLAS.

On CPU, torch.mm and nn.Linear call MKL's sgemm.  On AMD processors with
AVX-512, MKL runs its AVX2 code: on the 2-core EPYC of docs/benchmarks.md it
reaches 226 GFLOP/s on 2048 x 2048 matrices, while oneDNN, which PyTorch
also ships and which picks its kernels by instruction set, reaches 489 on
the same matrices, and 2.2x on every matrix shape of a GPT-2 block.
PyTorch calls oneDNN for float32 matrix multiplies only from code that
torch.compile generates, through the operator used here,
torch.ops.mkldnn._linear_pointwise (x @ weight.T + bias).

`use("onednn")` routes the model's Linear layers (gpt2/model.py) and the
output layer's loss (gpt2/linear_cross_entropy.py) through it, forward and
backward; `use("blas")` (the default) keeps torch's own path.  "auto" times
both at start-up and takes oneDNN where it is clearly faster (MIN_SPEEDUP),
so a machine where the two are close keeps the same choice run after run
(a resumed run then continues with the same arithmetic).

The operator is internal to PyTorch: `available()` checks that it exists
and agrees with torch.mm before anything uses it, so another PyTorch
version without it falls back to BLAS instead of failing.
"""

import torch

from gpt2.errors import UsageError

# oneDNN is chosen by "auto" only if at least this much faster than BLAS: a
# near tie must not flip between runs.
MIN_SPEEDUP = 1.2

_backend = "blas"
_available = None


def available():
    """Whether this PyTorch can run float32 matrix multiplies through
    oneDNN, checked once against torch.mm on a small product."""
    global _available
    if _available is None:
        _available = False
        op = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)
        if op is not None and torch.backends.mkldnn.is_available():
            generator = torch.Generator().manual_seed(0)
            a, b = torch.randn(64, 48, generator=generator), torch.randn(32, 48, generator=generator)
            try:
                _available = torch.allclose(linear_product(a, b), a @ b.t(), rtol=1e-4, atol=1e-4)
            except RuntimeError:
                pass
    return _available


def linear_product(x, weight, bias=None):
    """x @ weight.T (+ bias) in oneDNN; x: (rows, in), weight: (out, in).
    Call where applies().  A transposed (non-contiguous) operand costs a copy."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def product(backend):
    """A function (a, b) -> a @ b of 2-D float32 CPU tensors through
    `backend`: "blas" (torch.mm) or "onednn"."""
    return mm if backend == "onednn" else torch.mm


def choose(requested, measured):
    """The backend to train with for --cpu-matmul `requested`; `measured`
    maps each available backend to its FLOP/s (gpt2/mfu.py's
    cpu_matmul_flops), used by "auto"."""
    if requested == "onednn" and not available():
        raise UsageError(
            "--cpu-matmul onednn: this PyTorch cannot run float32 matrix multiplies through oneDNN; "
            "use --cpu-matmul auto or blas"
        )
    if requested != "auto":
        return requested
    faster = measured.get("onednn", 0.0) >= MIN_SPEEDUP * measured["blas"]
    return "onednn" if faster else "blas"


def use(backend):
    """Route float32 CPU matrix multiplies of the model through `backend`
    ("blas" or "onednn") from now on, in this process."""
    if backend not in ("blas", "onednn"):
        raise ValueError(f"unknown CPU matmul backend {backend!r}")
    if backend == "onednn" and not available():
        raise RuntimeError("oneDNN float32 matrix multiplies are not available in this PyTorch")
    global _backend
    _backend = backend


def in_use():
    return _backend


def applies(*tensors):
    """Whether the oneDNN path is on and these tensors can take it: float32
    on CPU, outside autocast (whose lower precision F.linear applies) and
    outside torch.compile (which makes its own choice)."""
    return (
        _backend == "onednn"
        and all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors)
        and not torch.is_autocast_enabled("cpu")
        and not torch.compiler.is_compiling()
    )


def mm(a, b):
    """a @ b of 2-D float32 CPU tensors in oneDNN (call where applies())."""
    return linear_product(a, b.t())


class _OneDNNLinear(torch.autograd.Function):
    """F.linear with all three products in oneDNN."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return linear_product(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad_x = mm(grad, weight) if ctx.needs_input_grad[0] else None
        grad_weight = mm(grad.t(), x) if ctx.needs_input_grad[1] else None
        grad_bias = grad.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_weight, grad_bias


def linear(x, weight, bias=None):
    """F.linear(x, weight, bias), through oneDNN when use("onednn") is in
    effect and the tensors are float32 on CPU."""
    if not applies(x, weight):
        return torch.nn.functional.linear(x, weight, bias)
    rows = x.reshape(-1, x.size(-1))
    return _OneDNNLinear.apply(rows, weight, bias).view(*x.shape[:-1], weight.size(0))


class Linear(torch.nn.Linear):
    """nn.Linear (same parameters, same state_dict) whose product goes
    through `linear` above."""

    def forward(self, x):
        return linear(x, self.weight, self.bias)
