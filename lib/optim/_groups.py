"""What every optimizer module shares: the parameter groups and the kernel choice.

Not an optimizer (its name starts with "_", so the registry skips it).
"""


def param_groups(model, weight_decay):
    """Two groups as in nanoGPT: decay for tensors with dim >= 2, none for the rest.

    Weight decay on tensors with dim >= 2 (matmul weights and embeddings),
    none on biases and LayerNorm gains, which are 1-D and whose decay only
    hurts.  model.parameters() yields a tied weight (wte / lm_head) once, so
    it is optimized once.  Empty groups are left out (torch would keep them
    as dead entries in every checkpoint).
    """
    params = trainable_unique(model)
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


def trainable_unique(model):
    """The parameters to optimize, each once (a tied weight is yielded once)."""
    return [p for p in model.parameters() if p.requires_grad]


def kernel_choice(groups):
    """fused=True when every parameter is on one CUDA or CPU device: one
    vectorised kernel per tensor does the whole update (torch >= 2.4 has it
    on CPU too; on 2 CPU cores an AdamW step over 16M parameters took 42 ms
    with foreach, which on CPU is a loop of per-tensor ops, and 7.5 ms
    fused).  foreach=True otherwise (other devices, mixed placements)."""
    devices = {p.device.type for g in groups for p in g["params"]}
    return {"fused": True} if len(devices) == 1 and devices <= {"cuda", "cpu"} else {"foreach": True}
