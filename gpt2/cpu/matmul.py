"""float32 matrix multiplies on CPU through oneDNN instead of torch.mm's BLAS.

On CPU, torch.mm and nn.Linear call MKL's sgemm.  On AMD processors with
AVX-512, MKL runs its AVX2 code: on the 2-core EPYC of docs/benchmarks.md it
reaches 226 GFLOP/s on 2048 x 2048 matrices, while oneDNN, which PyTorch
also ships and which picks its kernels by instruction set, reaches 489 on
the same matrices, and 2.2x on every matrix shape of a GPT-2 block.
PyTorch calls oneDNN for float32 matrix multiplies only from code that
torch.compile generates, through the operator used here,
torch.ops.mkldnn._linear_pointwise (x @ weight.T + bias).

Nothing here is switched on for the whole process: a model computes
through oneDNN only once its nn.Linear layers are swapped for OneDNNLinear
(`swap_linears`, called by gpt2/cpu/fast_paths.py at run setup), and the
chunked loss only when it is given "onednn" (gpt2/cpu/linear_cross_entropy.py).
Every other model in the process keeps torch's own path.  `choose` picks
the library for --cpu-matmul: "auto" takes oneDNN where it is clearly
faster (MIN_SPEEDUP) in the machine's timing, which is taken once and kept
(gpt2/cpu/machine_profile.py), so the choice cannot flip between runs; and a
resumed run keeps the library its checkpoint recorded (gpt2/run/setup.py),
so it continues with the same arithmetic.

The operator is internal to PyTorch: `available()` checks that it exists
and agrees with torch.mm before anything uses it, so another PyTorch
version without it falls back to BLAS instead of failing.
"""

import functools

import torch
from torch import nn
from torch.nn import functional as F

from gpt2.errors import UsageError

# oneDNN is chosen by "auto" only if at least this much faster than BLAS: a
# near tie must not flip between runs.
MIN_SPEEDUP = 1.2
# The libraries, by the name --cpu-matmul and the bench report use.
LIBRARIES = ("blas", "onednn")


@functools.cache
def available():
    """Whether this PyTorch can run float32 matrix multiplies through
    oneDNN, checked once against torch.mm on a small product (a fact about
    the installed PyTorch, so cached; it switches nothing)."""
    op = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)
    if op is None or not torch.backends.mkldnn.is_available():
        return False
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(64, 48, generator=generator), torch.randn(32, 48, generator=generator)
    try:
        return torch.allclose(linear_product(a, b), a @ b.t(), rtol=1e-4, atol=1e-4)
    except RuntimeError:
        return False


def check_library(library):
    """Raise unless `library` is one of LIBRARIES and usable here: a typo or
    a PyTorch without oneDNN fails at setup, not silently later."""
    if library not in LIBRARIES:
        raise ValueError(f"unknown CPU matmul library {library!r}; expected one of {LIBRARIES}")
    if library == "onednn" and not available():
        raise RuntimeError("oneDNN float32 matrix multiplies are not available in this PyTorch")


def linear_product(x, weight, bias=None):
    """x @ weight.T (+ bias) in oneDNN; x: (rows, in), weight: (out, in).
    Call where can_take().  A transposed (non-contiguous) operand costs a copy."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def product(backend):
    """A function (a, b) -> a @ b of 2-D float32 CPU tensors through
    `backend`: "blas" (torch.mm) or "onednn"."""
    return mm if backend == "onednn" else torch.mm


def choose(requested, measured):
    """The backend to train with for --cpu-matmul `requested`; `measured`
    maps each available backend to its FLOP/s (gpt2/run/mfu.py's
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


def can_take(*tensors):
    """Whether oneDNN can compute with these tensors without changing the
    arithmetic: float32 on CPU, outside autocast (whose lower precision
    F.linear applies) and outside torch.compile (which makes its own
    choice).  None entries (a missing bias) are skipped."""
    return (
        all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors if t is not None)
        and not torch.is_autocast_enabled("cpu")
        and not torch.compiler.is_compiling()
    )


def mm(a, b):
    """a @ b of 2-D float32 CPU tensors in oneDNN (call where can_take())."""
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
    """F.linear(x, weight, bias), through oneDNN where can_take() allows,
    else F.linear itself."""
    if not can_take(x, weight, bias):
        return F.linear(x, weight, bias)
    rows = x.reshape(-1, x.size(-1))
    return _OneDNNLinear.apply(rows, weight, bias).view(*x.shape[:-1], weight.size(0))


class OneDNNLinear(nn.Linear):
    """nn.Linear (same parameters, same state_dict) whose product goes
    through `linear` above: oneDNN for float32 on CPU, F.linear otherwise."""

    def forward(self, x):
        return linear(x, self.weight, self.bias)


# The Linear class that computes through each library.
_LINEAR_CLASS = {"blas": nn.Linear, "onednn": OneDNNLinear}


def swap_linears(model, library):
    """Make every plain Linear of `model` (nn.Linear or OneDNNLinear, not
    other subclasses) compute through `library`, in place.  Each new module
    takes over the old one's Parameter objects (weight tying, the
    optimizer's and the pruner's references survive), under the same name
    (same state_dict keys), in the same training mode.  Returns `model`."""
    check_library(library)
    cls = _LINEAR_CLASS[library]
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) in _LINEAR_CLASS.values() and type(child) is not cls:
                setattr(parent, name, _relinked(child, cls))
    return model


def _relinked(linear_module, cls):
    """A `cls` holding `linear_module`'s very parameters; built on the meta
    device, so its own throw-away initial weights cost nothing."""
    new = cls(linear_module.in_features, linear_module.out_features, bias=False, device="meta")
    new.weight = linear_module.weight
    new.bias = linear_module.bias
    return new.train(linear_module.training)


def library_of(model):
    """The library `model`'s Linear layers compute through: "onednn" once
    swap_linears(model, "onednn") ran, else "blas"."""
    return "onednn" if any(isinstance(m, OneDNNLinear) for m in model.modules()) else "blas"
