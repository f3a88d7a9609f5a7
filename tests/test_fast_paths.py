"""The speed-ups of the CPU training path change no result: the chunked
linear cross-entropy (gpt2/cpu/linear_cross_entropy.py) gives F.cross_entropy's
loss and gradients, through BLAS and through oneDNN; oneDNN's Linear
(gpt2/cpu/matmul.py) gives F.linear's; a model with the fast paths attached
(gpt2/cpu/fast_paths.py) trains as the plain one, keeps its parameters, and
leaves every other model of the process plain; and keeping freed memory
(gpt2/cpu/allocator.py) is safe to ask for."""

import platform

import pytest
import torch
import torch.nn.functional as F

from torch import nn

from gpt2.cpu import matmul as cpu_matmul
from gpt2.cpu.allocator import keep_freed_memory
from gpt2.cpu.fast_paths import use_cpu_fast_paths
from gpt2.errors import UsageError
from gpt2.cpu import linear_cross_entropy as linear_cross_entropy_module
from gpt2.cpu.linear_cross_entropy import ChunkedLoss, default_chunk_rows, linear_cross_entropy
from gpt2.model.gpt import GPT, PADDED_VOCAB_SIZE, GPTConfig

SMALL = dict(block_size=32, n_layer=2, n_head=2, n_embd=32)


@pytest.fixture
def onednn():
    """The tests that need oneDNN fail, rather than skip, without it."""
    assert cpu_matmul.available(), "the pinned PyTorch (2.13) has oneDNN's _linear_pointwise"


@pytest.fixture
def onednn_calls(monkeypatch):
    """A list that gets one entry per oneDNN product, to see which path ran."""
    calls, product = [], cpu_matmul.linear_product

    def counted(*args):
        calls.append(args[0].shape)
        return product(*args)

    monkeypatch.setattr(cpu_matmul, "linear_product", counted)
    return calls


def loss_and_grads(model, idx, targets):
    """(logits, loss, gradient of every parameter) of one forward/backward."""
    logits, loss = model(idx, targets)
    return logits, loss, torch.autograd.grad(loss, list(model.parameters()))


def plain_loss_and_grads(hidden, weight, targets, scale=1.0):
    hidden, weight = hidden.detach().requires_grad_(), weight.detach().requires_grad_()
    loss = F.cross_entropy(hidden @ weight.t(), targets)
    return (loss, *torch.autograd.grad(loss * scale, (hidden, weight)))


def chunked_loss_and_grads(hidden, weight, targets, chunk_rows, scale=1.0, matmul="blas"):
    hidden, weight = hidden.detach().requires_grad_(), weight.detach().requires_grad_()
    loss = linear_cross_entropy(hidden, weight, targets, chunk_rows=chunk_rows, matmul=matmul)
    return (loss, *torch.autograd.grad(loss * scale, (hidden, weight)))


@pytest.mark.parametrize("matmul", cpu_matmul.LIBRARIES)  # oneDNN leaves float64 to torch.mm
@pytest.mark.parametrize("chunk_rows", [1, 7, 50, 300, 1000])  # uneven, exact, larger than the rows
@pytest.mark.parametrize("scale", [1.0, 0.25])  # 0.25: gradient accumulation divides the loss
def test_chunked_loss_equals_cross_entropy_in_float64(chunk_rows, scale, matmul):
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(300, 16, dtype=torch.float64, generator=generator)
    weight = torch.randn(500, 16, dtype=torch.float64, generator=generator)
    targets = torch.randint(0, 500, (300,), generator=generator)
    expected = plain_loss_and_grads(hidden, weight, targets, scale)
    got = chunked_loss_and_grads(hidden, weight, targets, chunk_rows, scale, matmul)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_model_gives_the_same_loss_and_gradients_either_way():
    """Through the whole GPT in float32: every parameter's gradient,
    including the tied token matrix, which gets both the embedding's and
    the output layer's share."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(**SMALL))
    idx, targets = torch.randint(0, 50257, (2, 4, 32))
    logits, plain, plain_grads = loss_and_grads(model, idx, targets)
    model.output_loss = ChunkedLoss("blas")
    no_logits, chunked, chunked_grads = loss_and_grads(model, idx, targets)
    assert logits.shape == (4, 32, PADDED_VOCAB_SIZE) and no_logits is None
    torch.testing.assert_close(chunked, plain, rtol=1e-5, atol=1e-5)
    for a, b in zip(chunked_grads, plain_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("matmul", cpu_matmul.LIBRARIES)
@pytest.mark.parametrize("chunk_rows", [7, 64, 1000])
def test_chunked_loss_in_float32_equals_cross_entropy(onednn, onednn_calls, chunk_rows, matmul):
    """float32 (oneDNN's only type), vocabulary wider than one gradient
    block; through the library asked for, and only that one."""
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(100, 32, generator=generator)
    weight = torch.randn(3000, 32, generator=generator) * 0.1
    targets = torch.randint(0, 3000, (100,), generator=generator)
    assert cpu_matmul.can_take(hidden, weight)
    expected = plain_loss_and_grads(hidden.double(), weight.double(), targets, 0.5)
    got = chunked_loss_and_grads(hidden, weight, targets, chunk_rows, 0.5, matmul)
    assert bool(onednn_calls) == (matmul == "onednn")
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b.float(), rtol=1e-4, atol=1e-6)


def test_an_unknown_library_is_refused_when_the_loss_is_made():
    with pytest.raises(ValueError, match="unknown CPU matmul library 'mkl'"):
        ChunkedLoss("mkl")


@pytest.mark.parametrize("bias", [True, False])
def test_onednn_linear_equals_f_linear_with_gradients(onednn, bias):
    torch.manual_seed(0)
    layer = cpu_matmul.OneDNNLinear(24, 40, bias=bias)
    x = torch.randn(3, 5, 24, requires_grad=True)  # any leading shape, as nn.Linear
    y = layer(x)
    grads = torch.autograd.grad(y.square().sum(), [x, *layer.parameters()])
    y_plain = F.linear(x, layer.weight, layer.bias)
    plain_grads = torch.autograd.grad(y_plain.square().sum(), [x, *layer.parameters()])
    assert y.grad_fn.next_functions[0][0].name() == "_OneDNNLinearBackward"  # it took the oneDNN path
    assert y.shape == (3, 5, 40)
    torch.testing.assert_close(y, y_plain, rtol=1e-5, atol=1e-5)
    for a, b in zip(grads, plain_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_onednn_is_not_used_where_it_would_change_the_arithmetic(onednn):
    x = torch.randn(4, 8)
    assert cpu_matmul.can_take(x)
    assert not cpu_matmul.can_take(x.double())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not cpu_matmul.can_take(x)  # autocast's bfloat16 F.linear applies instead
    layer = cpu_matmul.OneDNNLinear(8, 3).double()
    y = layer(x.double().requires_grad_())
    assert y.grad_fn.name() != "_OneDNNLinearBackward" and y.dtype == torch.float64


@pytest.mark.parametrize("matmul, chunked_loss", [("onednn", True), ("onednn", False), ("blas", True)])
def test_a_model_with_fast_paths_trains_as_the_plain_model(onednn, matmul, chunked_loss):
    """The same parameters, plain first, then with the fast paths attached:
    the same loss and every parameter's gradient (the tied token matrix
    included), through the paths asked for."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(**SMALL))
    idx, targets = torch.randint(0, 50257, (2, 4, 32))
    _, plain, plain_grads = loss_and_grads(model, idx, targets)
    use_cpu_fast_paths(model, matmul, chunked_loss)
    logits, loss, grads = loss_and_grads(model, idx, targets)
    assert (logits is None) == chunked_loss
    assert cpu_matmul.library_of(model) == matmul
    torch.testing.assert_close(loss, plain, rtol=1e-5, atol=1e-5)
    for a, b in zip(grads, plain_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_attaching_fast_paths_keeps_parameters_tying_and_state_dict(onednn):
    """The optimizer, the pruner and checkpoints hold the model's Parameter
    objects and names: swapping the layers must keep both, and swapping
    back must give plain nn.Linear layers again."""
    model = GPT(GPTConfig(bias=False, **SMALL)).eval()
    parameters = dict(model.named_parameters())
    keys = list(model.state_dict())
    use_cpu_fast_paths(model, "onednn", chunked_loss=True)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 4 * SMALL["n_layer"] + 1
    assert all(type(m) is cpu_matmul.OneDNNLinear and not m.training and m.bias is None for m in linears)
    assert model.lm_head.weight is model.transformer.wte.weight
    assert all(p is parameters[name] for name, p in model.named_parameters())
    assert list(model.state_dict()) == keys
    use_cpu_fast_paths(model, "blas", chunked_loss=False)
    assert all(type(m) is nn.Linear for m in model.modules() if isinstance(m, nn.Linear))
    assert model.output_loss is None and model.lm_head.weight is model.transformer.wte.weight
    assert all(p is parameters[name] for name, p in model.named_parameters())


def test_fast_paths_on_one_model_leave_every_other_model_plain(onednn, onednn_calls):
    """The old bug: switching oneDNN on for a training run switched it on
    for every model of the process.  A model built before, and one built
    after, must compute bit for bit as if the fast model never existed."""
    idx, targets = torch.randint(0, 50257, (2, 4, 32), generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    before = GPT(GPTConfig(**SMALL))
    expected_logits, expected_loss, expected_grads = loss_and_grads(before, idx, targets)
    fast = use_cpu_fast_paths(GPT(GPTConfig(**SMALL)), "onednn", chunked_loss=True)
    loss_and_grads(fast, idx, targets)
    assert onednn_calls  # the fast model did go through oneDNN
    onednn_calls.clear()
    torch.manual_seed(0)
    after = GPT(GPTConfig(**SMALL))
    for model in (before, after):
        logits, loss, grads = loss_and_grads(model, idx, targets)
        assert torch.equal(logits, expected_logits) and torch.equal(loss, expected_loss)
        assert all(torch.equal(a, b) for a, b in zip(grads, expected_grads))
        assert model.output_loss is None and cpu_matmul.library_of(model) == "blas"
    assert not onednn_calls


def test_auto_takes_onednn_only_when_clearly_faster(monkeypatch):
    assert cpu_matmul.choose("auto", {"blas": 100.0, "onednn": 250.0}) == "onednn"
    assert cpu_matmul.choose("auto", {"blas": 100.0, "onednn": 110.0}) == "blas"  # a near tie keeps BLAS
    assert cpu_matmul.choose("auto", {"blas": 100.0}) == "blas"  # oneDNN not available
    assert cpu_matmul.choose("blas", {"blas": 100.0, "onednn": 250.0}) == "blas"
    monkeypatch.setattr(cpu_matmul, "available", lambda: False)
    with pytest.raises(UsageError, match="--cpu-matmul onednn: this PyTorch cannot"):
        cpu_matmul.choose("onednn", {"blas": 100.0})


@pytest.mark.parametrize("library", ["blas", "onednn"])
def test_without_gradients_only_the_loss_is_computed(monkeypatch, library):
    def no_gradient_work(*args, **kwargs):
        raise AssertionError("a gradient product ran under torch.no_grad()")

    for products in (linear_cross_entropy_module._BlasProducts, linear_cross_entropy_module._OneDNNProducts):
        monkeypatch.setattr(products, "grad_hidden", no_gradient_work)
        monkeypatch.setattr(products, "grad_weight", no_gradient_work)
    torch.manual_seed(0)
    model = GPT(GPTConfig(**SMALL)).eval()
    idx, targets = torch.randint(0, 50257, (2, 3, 32))
    with torch.no_grad():
        _, plain = model(idx, targets)
        use_cpu_fast_paths(model, library, chunked_loss=True)
        _, chunked = model(idx, targets)
    torch.testing.assert_close(chunked, plain, rtol=1e-5, atol=1e-5)


def test_under_autocast_the_loss_is_still_computed_in_float32():
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(64, 16, generator=generator)
    weight = torch.randn(500, 16, generator=generator)
    targets = torch.randint(0, 500, (64,), generator=generator)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = linear_cross_entropy(hidden, weight, targets, chunk_rows=16)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, F.cross_entropy(hidden @ weight.t(), targets))


def test_backpropagating_the_same_graph_twice_is_refused_not_doubled():
    hidden = torch.randn(8, 4, requires_grad=True)
    weight = torch.randn(10, 4, requires_grad=True)
    loss = linear_cross_entropy(hidden, weight, torch.randint(0, 10, (8,)), chunk_rows=3)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        (loss * 2).backward()


def test_chunks_hold_a_bounded_number_of_logits():
    assert default_chunk_rows(PADDED_VOCAB_SIZE) == 512
    assert default_chunk_rows(10**9) == 1


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt settings are glibc's")
def test_keeping_freed_memory_is_accepted_and_idempotent():
    assert keep_freed_memory() is True
    assert keep_freed_memory() is True
    assert torch.ones(64 << 20, dtype=torch.uint8).sum().item() == 64 << 20  # big blocks still allocate
