"""Which weights are prunable, and how sparse they are."""

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel


def unwrap(model):
    """The model inside a DDP and/or torch.compile wrapper."""
    if isinstance(model, DistributedDataParallel):
        model = model.module
    return getattr(model, "_orig_mod", model)  # torch.compile's wrapper


def prunable_weights(model):
    """{name: weight} of every nn.Linear not tied to an nn.Embedding, in module order."""
    model = unwrap(model)
    embedding_weights = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    return {
        f"{name}.weight": module.weight
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and id(module.weight) not in embedding_weights
    }


def sparsity(model):
    """Fraction of exact zeros among the prunable weights, read from the weights."""
    weights = prunable_weights(model).values()
    total = sum(w.numel() for w in weights)
    if total == 0:
        return 0.0
    # Counts add up on the weights' device; int() is then the one host sync
    # (one per tensor would stall a GPU dozens of times per call).
    nonzero = int(sum(torch.count_nonzero(w) for w in weights))
    return (total - nonzero) / total
