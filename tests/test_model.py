"""GPT-2 model (gpt2/model/gpt.py) and the MFU helper (gpt2/run/mfu.py)."""

import math

import pytest
import torch

from gpt2.cpu.peak import cpu_matmul_flops, measure_matmul_flops
from gpt2.run.mfu import gpu_peak_flops, model_flops_utilization, peak_flops
from gpt2.model.gpt import GPT, MODEL_SIZES, PADDED_VOCAB_SIZE, GPTConfig

TINY = dict(block_size=32, n_layer=2, n_head=2, n_embd=32)

# Hugging Face's parameter counts of the published checkpoints (50,257 ids,
# 1,024 positions, with biases): our shapes must give exactly these.
PUBLISHED_PARAMETERS = {
    "gpt2": 124_439_808,
    "gpt2-medium": 354_823_168,
    "gpt2-large": 774_030_080,
    "gpt2-xl": 1_557_611_200,
}


@pytest.mark.parametrize("name", MODEL_SIZES)
def test_published_sizes_have_gpt2_parameter_counts(name):
    with torch.device("meta"):  # shapes only: no memory, no time
        model = GPT(GPTConfig(vocab_size=50257, bias=True, **MODEL_SIZES[name]))
    assert model.num_parameters(non_embedding=False) == PUBLISHED_PARAMETERS[name]


def test_vocab_is_padded_to_a_multiple_of_64():
    assert PADDED_VOCAB_SIZE == 50304 and PADDED_VOCAB_SIZE % 64 == 0 and PADDED_VOCAB_SIZE >= 50257
    assert GPTConfig().vocab_size == PADDED_VOCAB_SIZE


def test_no_bias_means_no_bias_parameters_at_all():
    model = GPT(GPTConfig(bias=False, **TINY))
    names = [name for name, _ in model.named_parameters()]
    assert not [n for n in names if "bias" in n]
    for module in model.modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.LayerNorm)):
            assert module.bias is None, module


def test_bias_on_gives_linear_and_layernorm_biases():
    model = GPT(GPTConfig(bias=True, **TINY))
    names = {name for name, _ in model.named_parameters()}
    assert "transformer.h.0.attn.c_attn.bias" in names
    assert "transformer.h.0.ln_1.bias" in names
    assert "transformer.ln_f.bias" in names


def test_output_layer_shares_the_token_embedding():
    model = GPT(GPTConfig(**TINY))
    assert model.lm_head.weight is model.transformer.wte.weight
    # The shared matrix is one parameter, counted once.
    assert sum(p is model.lm_head.weight for p in model.parameters()) == 1


def test_gpt2_initialisation_scales_residual_projections():
    torch.manual_seed(0)
    n_layer = 8
    model = GPT(GPTConfig(block_size=32, n_layer=n_layer, n_head=4, n_embd=256))
    residual = model.transformer.h[0].mlp.c_proj.weight
    other = model.transformer.h[0].mlp.c_fc.weight
    assert residual.std().item() == pytest.approx(0.02 / math.sqrt(2 * n_layer), rel=0.05)
    assert other.std().item() == pytest.approx(0.02, rel=0.05)


def test_untrained_loss_is_near_uniform_over_the_vocabulary():
    torch.manual_seed(0)
    model = GPT(GPTConfig(**TINY))
    idx, targets = torch.randint(0, 50257, (2, 4, 32))
    logits, loss = model(idx, targets)
    assert logits.shape == (4, 32, PADDED_VOCAB_SIZE)
    assert loss.item() == pytest.approx(math.log(PADDED_VOCAB_SIZE), abs=0.3)


def test_a_new_model_is_plain_and_output_loss_replaces_only_the_loss_with_targets():
    """Plain nn.Linear layers and no output_loss until one is set on this
    instance; once set, it gets the final hidden rows, the tied output
    weight and the target rows, and its value is the loss."""
    model = GPT(GPTConfig(**TINY))
    assert model.output_loss is None
    assert all(type(m) is torch.nn.Linear for m in model.modules() if isinstance(m, torch.nn.Linear))
    idx, targets = torch.randint(0, 50257, (2, 4, 32))
    seen = []

    def output_loss(hidden, weight, target_rows):
        seen.append((hidden.shape, weight, target_rows))
        return hidden.sum() * 0 + 1.5

    model.output_loss = output_loss
    logits, loss = model(idx, targets)
    assert logits is None and loss.item() == 1.5
    (shape, weight, target_rows), = seen
    assert shape == (4 * 32, TINY["n_embd"]) and weight is model.lm_head.weight
    assert torch.equal(target_rows, targets.view(-1))
    logits, loss = model(idx)  # without targets: the logits, as ever
    assert logits.shape == (4, 32, PADDED_VOCAB_SIZE) and loss is None and len(seen) == 1
    assert GPT(GPTConfig(**TINY)).output_loss is None  # per instance


def test_attention_is_causal():
    """Changing a later token must not change the logits of earlier ones."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(**TINY)).eval()
    idx = torch.randint(0, 50257, (1, 16))
    changed = idx.clone()
    changed[0, 10] = (idx[0, 10] + 1) % 50257
    a, _ = model(idx)
    b, _ = model(changed)
    assert torch.allclose(a[0, :10], b[0, :10], atol=1e-5)
    assert not torch.allclose(a[0, 10:], b[0, 10:], atol=1e-5)


def test_dropout_is_active_only_in_training_mode():
    torch.manual_seed(0)
    model = GPT(GPTConfig(dropout=0.5, **TINY))
    idx = torch.randint(0, 50257, (2, 16))
    assert not torch.equal(model(idx)[0], model(idx)[0])
    model.eval()
    assert torch.equal(model(idx)[0], model(idx)[0])


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(n_head=3, n_embd=32), r"n_embd \(32\) must be divisible by n_head \(3\)"),
        (dict(n_layer=0), "n_layer must be at least 1"),
        (dict(dropout=1.0), r"dropout must be in \[0, 1\)"),
    ],
)
def test_bad_shapes_are_refused_with_the_field_named(fields, message):
    with pytest.raises(ValueError, match=message):
        GPTConfig(**{**TINY, **fields})


def test_sequence_longer_than_block_size_is_refused():
    model = GPT(GPTConfig(**TINY))
    with pytest.raises(ValueError, match="exceeds block_size 32"):
        model(torch.zeros(1, 33, dtype=torch.long))


def test_flops_per_token_follows_the_palm_formula():
    config = GPTConfig(**TINY)
    model = GPT(config)
    n = model.num_parameters()
    assert model.flops_per_token() == 6 * n + 12 * 2 * 2 * 16 * 32


@pytest.mark.parametrize(
    "name, dtype, peak",
    [
        ("NVIDIA H100 80GB HBM3", "bfloat16", 989e12),
        ("NVIDIA H100 PCIe", "bfloat16", 756e12),
        ("NVIDIA A100-SXM4-80GB", "bfloat16", 312e12),
        ("NVIDIA A100-PCIE-40GB", "float32", 156e12),
        ("NVIDIA L40S", "bfloat16", 362e12),
        ("NVIDIA L40", "bfloat16", 181e12),  # not the L4's 121
        ("NVIDIA GH200 480GB", "bfloat16", 989e12),
        ("NVIDIA L4", "bfloat16", 121e12),
        ("NVIDIA H100 NVL", "bfloat16", 835e12),
        ("NVIDIA H200", "bfloat16", 989e12),
        ("NVIDIA H200 NVL", "bfloat16", 835e12),  # the PCIe card, not the SXM's 989
        ("NVIDIA B200", "bfloat16", 2250e12),
        ("NVIDIA GeForce RTX 4090", "float32", 82.6e12),
        ("AMD Instinct MI300X", "bfloat16", 1307e12),  # ROCm torch reports it through torch.cuda
        ("NVIDIA A10", "bfloat16", 125e12),
        ("NVIDIA RTX A1000", "bfloat16", None),  # whole words: not an A10
        ("NVIDIA A10G", "bfloat16", None),
        ("NVIDIA A100-SXM4-40GB MIG 3g.20gb", "bfloat16", None),  # a slice, not the card
        ("NVIDIA H100 80GB HBM3 MIG 1g.10gb", "float32", None),
        ("Tesla V100-SXM2-16GB", "bfloat16", None),  # no bfloat16 on Volta
        ("Tesla V100-SXM2-16GB", "float16", 125e12),
        ("Some Future GPU", "bfloat16", None),
    ],
)
def test_gpu_peak_comes_from_the_device_name(name, dtype, peak):
    assert gpu_peak_flops(name, dtype) == peak


def test_cpu_peak_is_measured_without_touching_the_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    flops = measure_matmul_flops(seconds=0.05)
    assert 1e8 < flops < 1e15
    assert torch.equal(torch.rand(3), expected)


def test_cpu_peak_is_the_fastest_library():
    measured = cpu_matmul_flops(seconds=0.05)
    assert set(measured) == {"blas", "onednn"}  # the pinned PyTorch has both
    assert all(1e8 < flops < 1e15 for flops in measured.values())
    assert peak_flops(torch.device("cpu"), "float32", measured) == max(measured.values())


def test_mfu_divides_achieved_by_peak_of_all_ranks():
    assert model_flops_utilization(1e6, 1e4, 1e11) == pytest.approx(0.1)
    assert model_flops_utilization(1e6, 1e4, 1e11, world_size=2) == pytest.approx(0.05)
