"""The speed-ups of the CPU training path change no result: the chunked
linear cross-entropy (gpt2/linear_cross_entropy.py) gives F.cross_entropy's
loss and gradients, through BLAS and through oneDNN; oneDNN's Linear
(gpt2/cpu_matmul.py) gives F.linear's; and keeping freed memory
(gpt2/cpu_allocator.py) is safe to ask for."""

import platform

import pytest
import torch
import torch.nn.functional as F

from gpt2 import cpu_matmul
from gpt2.cpu_allocator import keep_freed_memory
from gpt2.errors import UsageError
from gpt2 import linear_cross_entropy as linear_cross_entropy_module
from gpt2.linear_cross_entropy import default_chunk_rows, linear_cross_entropy
from gpt2.model import GPT, PADDED_VOCAB_SIZE, GPTConfig


@pytest.fixture
def onednn():
    """oneDNN matrix multiplies for the test, BLAS again afterwards."""
    assert cpu_matmul.available(), "the pinned PyTorch (2.13) has oneDNN's _linear_pointwise"
    cpu_matmul.use("onednn")
    yield
    cpu_matmul.use("blas")


def plain_loss_and_grads(hidden, weight, targets, scale=1.0):
    hidden, weight = hidden.detach().requires_grad_(), weight.detach().requires_grad_()
    loss = F.cross_entropy(hidden @ weight.t(), targets)
    return (loss, *torch.autograd.grad(loss * scale, (hidden, weight)))


def chunked_loss_and_grads(hidden, weight, targets, chunk_rows, scale=1.0):
    hidden, weight = hidden.detach().requires_grad_(), weight.detach().requires_grad_()
    loss = linear_cross_entropy(hidden, weight, targets, chunk_rows=chunk_rows)
    return (loss, *torch.autograd.grad(loss * scale, (hidden, weight)))


@pytest.mark.parametrize("chunk_rows", [1, 7, 50, 300, 1000])  # uneven, exact, larger than the rows
@pytest.mark.parametrize("scale", [1.0, 0.25])  # 0.25: gradient accumulation divides the loss
def test_chunked_loss_equals_cross_entropy_in_float64(chunk_rows, scale):
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(300, 16, dtype=torch.float64, generator=generator)
    weight = torch.randn(500, 16, dtype=torch.float64, generator=generator)
    targets = torch.randint(0, 500, (300,), generator=generator)
    expected = plain_loss_and_grads(hidden, weight, targets, scale)
    got = chunked_loss_and_grads(hidden, weight, targets, chunk_rows, scale)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_model_gives_the_same_loss_and_gradients_either_way():
    """Through the whole GPT in float32: every parameter's gradient,
    including the tied token matrix, which gets both the embedding's and
    the output layer's share."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=32, n_layer=2, n_head=2, n_embd=32))
    idx, targets = torch.randint(0, 50257, (2, 4, 32))
    logits, plain = model(idx, targets)
    plain_grads = torch.autograd.grad(plain, list(model.parameters()))
    no_logits, chunked = model(idx, targets, chunked_loss=True)
    chunked_grads = torch.autograd.grad(chunked, list(model.parameters()))
    assert logits.shape == (4, 32, PADDED_VOCAB_SIZE) and no_logits is None
    torch.testing.assert_close(chunked, plain, rtol=1e-5, atol=1e-5)
    for a, b in zip(chunked_grads, plain_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("chunk_rows", [7, 64, 1000])
def test_chunked_loss_through_onednn_equals_cross_entropy(onednn, chunk_rows):
    """float32 (oneDNN's only type), vocabulary wider than one gradient block."""
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(100, 32, generator=generator)
    weight = torch.randn(3000, 32, generator=generator) * 0.1
    targets = torch.randint(0, 3000, (100,), generator=generator)
    assert cpu_matmul.applies(hidden, weight)
    expected = plain_loss_and_grads(hidden.double(), weight.double(), targets, 0.5)
    got = chunked_loss_and_grads(hidden, weight, targets, chunk_rows, 0.5)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b.float(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("bias", [True, False])
def test_onednn_linear_equals_f_linear_with_gradients(onednn, bias):
    torch.manual_seed(0)
    layer = cpu_matmul.Linear(24, 40, bias=bias)
    x = torch.randn(3, 5, 24, requires_grad=True)  # any leading shape, as nn.Linear
    y = layer(x)
    grads = torch.autograd.grad(y.square().sum(), [x, *layer.parameters()])
    cpu_matmul.use("blas")
    y_plain = torch.nn.functional.linear(x, layer.weight, layer.bias)
    plain_grads = torch.autograd.grad(y_plain.square().sum(), [x, *layer.parameters()])
    assert y.grad_fn.next_functions[0][0].name() == "_OneDNNLinearBackward"  # it took the oneDNN path
    assert y.shape == (3, 5, 40)
    torch.testing.assert_close(y, y_plain, rtol=1e-5, atol=1e-5)
    for a, b in zip(grads, plain_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_onednn_is_not_used_where_it_would_change_the_arithmetic(onednn):
    x = torch.randn(4, 8)
    assert cpu_matmul.applies(x)
    assert not cpu_matmul.applies(x.double())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not cpu_matmul.applies(x)  # autocast's bfloat16 F.linear applies instead
    cpu_matmul.use("blas")
    assert not cpu_matmul.applies(x)


def test_the_model_trains_the_same_through_either_library(onednn):
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=32, n_layer=2, n_head=2, n_embd=32))
    idx, targets = torch.randint(0, 50257, (2, 4, 32))
    _, loss = model(idx, targets, chunked_loss=True)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    cpu_matmul.use("blas")
    _, plain = model(idx, targets, chunked_loss=True)
    plain_grads = torch.autograd.grad(plain, list(model.parameters()))
    torch.testing.assert_close(loss, plain, rtol=1e-5, atol=1e-5)
    for a, b in zip(grads, plain_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_auto_takes_onednn_only_when_clearly_faster(monkeypatch):
    assert cpu_matmul.choose("auto", {"blas": 100.0, "onednn": 250.0}) == "onednn"
    assert cpu_matmul.choose("auto", {"blas": 100.0, "onednn": 110.0}) == "blas"  # a near tie keeps BLAS
    assert cpu_matmul.choose("auto", {"blas": 100.0}) == "blas"  # oneDNN not available
    assert cpu_matmul.choose("blas", {"blas": 100.0, "onednn": 250.0}) == "blas"
    monkeypatch.setattr(cpu_matmul, "_available", False)
    with pytest.raises(UsageError, match="--cpu-matmul onednn: this PyTorch cannot"):
        cpu_matmul.choose("onednn", {"blas": 100.0})


@pytest.mark.parametrize("library", ["blas", "onednn"])
def test_without_gradients_only_the_loss_is_computed(monkeypatch, library):
    cpu_matmul.use(library)

    def no_gradient_work(*args, **kwargs):
        raise AssertionError("a gradient product ran under torch.no_grad()")

    for products in (linear_cross_entropy_module._BlasProducts, linear_cross_entropy_module._OneDNNProducts):
        monkeypatch.setattr(products, "grad_hidden", no_gradient_work)
        monkeypatch.setattr(products, "grad_weight", no_gradient_work)
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=32, n_layer=2, n_head=2, n_embd=32)).eval()
    idx, targets = torch.randint(0, 50257, (2, 3, 32))
    with torch.no_grad():
        _, plain = model(idx, targets)
        _, chunked = model(idx, targets, chunked_loss=True)
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
