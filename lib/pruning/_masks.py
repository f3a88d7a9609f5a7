"""What a researcher inspects of a pruned model: per-layer sparsity, and
the masks as a compact file.

  layer_sparsity(pruner)           {"sparsity/<layer>": fraction of zeros} of
                                   each prunable weight, for the trackers
  save_masks(out_dir, pruner, it)  writes out_dir/masks.pt (atomically), every
                                   eval of a pruned run, beside the checkpoint
  load_masks(path)                 {layer: bool tensor, True = kept}

Both read the weights, not a method's bookkeeping: a pruned entry is an exact
zero, so they see the same thing for every method (state keeps its masks in
the optimizer, the others in the pruner).  masks.pt holds one bit per
weight (numpy.packbits of the flattened keep-mask, big-endian within each
byte), 1/32 of the float32 weights: GPT-2 124M's 85M prunable weights take
10.6 MB.  Read it with torch.load(path, weights_only=True) and load_masks().

Zeros in dense matrices save no FLOPs: a dense matmul multiplies them all
the same.  Unstructured sparsity pays only with sparse kernels or formats
(e.g. 2:4 semi-structured on recent NVIDIA GPUs), which gpt2lab does not use.
"""

from pathlib import Path

import numpy as np
import torch

from lib.atomic import atomic_open

MASKS_FILE = "masks.pt"
FORMAT = "gpt2lab-masks/1"


def layer_name(weight_name):
    """'transformer.h.0.attn.c_attn.weight' -> 'transformer.h.0.attn.c_attn'."""
    return weight_name.removesuffix(".weight")


def layer_sparsity(pruner):
    """{"sparsity/<layer>": fraction of exact zeros} of the pruner's weights
    ({} for dense training); one host sync for all of them, at evals only."""
    if not pruner.weights:
        return {}
    counts = torch.stack([torch.count_nonzero(w) for w in pruner.weights.values()]).tolist()
    return {
        f"sparsity/{layer_name(name)}": 1.0 - count / w.numel()
        for (name, w), count in zip(pruner.weights.items(), counts)
    }


def pack_masks(weights):
    """{layer: {"shape": [...], "bits": uint8 tensor}} of keep = (w != 0)."""
    packed = {}
    for name, w in weights.items():
        keep = (w.detach() != 0).flatten().cpu().numpy()
        packed[layer_name(name)] = {"shape": list(w.shape), "bits": torch.from_numpy(np.packbits(keep))}
    return packed


def save_masks(out_dir, pruner, iter_num):
    """Write out_dir/masks.pt for a pruning run (nothing for dense training)."""
    if not pruner.weights:
        return None
    path = Path(out_dir) / MASKS_FILE
    with atomic_open(path) as f:
        torch.save({"format": FORMAT, "iter_num": iter_num, "masks": pack_masks(pruner.weights)}, f)
    return path


def load_masks(path):
    """{layer: bool tensor of the weight's shape, True = kept} from a masks.pt."""
    saved = torch.load(path, weights_only=True)
    masks = {}
    for name, entry in saved["masks"].items():
        count = int(np.prod(entry["shape"]))
        bits = np.unpackbits(entry["bits"].numpy(), count=count).astype(bool)
        masks[name] = torch.from_numpy(bits).view(entry["shape"])
    return masks
