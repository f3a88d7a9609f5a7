"""Loss and perplexity over the whole prepared val split, in order (every
token predicted once: non-overlapping windows of block_size, the last,
partial one included), or over a text file (--text FILE, GPT-2 BPE).  The
loss is the mean over all predicted tokens, as the field reports it."""

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gpt2.data.tokenizer import gpt2_encoding
from lib.errors import UserError

NAME = "ppl"
DESCRIPTION = "loss and perplexity over the whole val split in order (or --text FILE)"


class PerplexityError(UserError):
    """No tokens to score; str() says where to get them."""


@torch.no_grad()
def token_loss(model, tokens, block_size, device, batch_size=8):
    """(mean loss, tokens predicted) of a 1-D sequence of token ids: window
    i predicts tokens[i*block_size + 1 : (i+1)*block_size + 1]."""
    tokens = torch.as_tensor(np.asarray(tokens, dtype=np.int64))
    predicted = len(tokens) - 1
    if predicted < 1:
        raise PerplexityError("fewer than 2 tokens to score")
    model.eval()
    total = torch.zeros((), dtype=torch.float64)
    full = predicted // block_size
    windows = [[s for s in range(i, min(i + batch_size, full))] for i in range(0, full, batch_size)]
    windows = [[s * block_size for s in group] for group in windows]
    if predicted % block_size:
        windows.append([full * block_size])  # the last, partial window
    for group in windows:
        n = min(block_size, predicted - group[0])
        x = torch.stack([tokens[s:s + n] for s in group]).to(device)
        y = torch.stack([tokens[s + 1:s + n + 1] for s in group]).to(device)
        logits, _ = model(x)
        losses = F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.view(-1), reduction="none")
        total += losses.double().sum().cpu()
    return (total / predicted).item(), predicted


def val_tokens(data_dir, dataset):
    path = Path(data_dir) / dataset / "val.bin"
    if not path.is_file():
        raise PerplexityError(f"no prepared val split at {path}; prepare it with `python gpt2/prepare_data.py "
                              f"--dataset {dataset}`, or score a text file with --text FILE")
    return np.memmap(path, dtype=np.uint16, mode="r")


def run(ctx):
    if ctx.args.text:
        path = Path(ctx.args.text)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise PerplexityError(f"--text {path}: cannot read it as UTF-8 text ({exc}); give a text file") from None
        tokens, name = gpt2_encoding().encode_ordinary(text), "text"
    else:
        tokens, name = val_tokens(ctx.args.data_dir, ctx.args.dataset), "val"
    loss, count = token_loss(ctx.model, tokens, ctx.model.config.block_size, ctx.device)
    return {f"ppl_{name}_loss": loss, f"ppl_{name}_perplexity": math.exp(min(loss, 700.0)), f"ppl_{name}_tokens": count}
