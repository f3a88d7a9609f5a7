"""The speed-ups of the CPU training path change no result: the chunked
linear cross-entropy (gpt2/linear_cross_entropy.py) gives F.cross_entropy's
loss and gradients, and keeping freed memory (gpt2/cpu_allocator.py) is safe
to ask for."""

import platform

import pytest
import torch
import torch.nn.functional as F

from gpt2.cpu_allocator import keep_freed_memory
from gpt2.linear_cross_entropy import default_chunk_rows, linear_cross_entropy
from gpt2.model import GPT, PADDED_VOCAB_SIZE, GPTConfig


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


def test_without_gradients_only_the_loss_is_computed():
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
