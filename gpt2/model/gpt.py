"""GPT-2, as published by OpenAI (Radford et al., 2019), in one readable file.

Pre-LayerNorm transformer blocks, learned position embeddings, GELU MLPs four
times the embedding width, and an output projection that shares its weights
with the token embedding.  The layout follows nanoGPT's model.py (and the
Hugging Face parameter names), so checkpoints are easy to compare.

Two deliberate choices:
  * vocab_size is 50,304 rather than GPT-2's 50,257: the next multiple of 64,
    so the embedding and output matrices tile evenly on tensor cores (nanoGPT
    measured ~25% faster steps).  The 47 extra ids never occur in the data;
    their logits are simply learned down towards zero probability.
  * `bias` really switches every bias off: Linear layers and LayerNorms alike.

The model is plain PyTorch: nn.Linear and F.cross_entropy.  The CPU fast
paths are attached to one instance explicitly (gpt2/cpu/fast_paths.py): its
Linear layers swapped for ones of the CPU's fastest library, and `output_loss` set to a loss that
never builds the full logits.  Nothing module-wide changes what any other
GPT computes.
"""

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint


# The GPT-2 tokenizer has 50,257 ids; padded up to a multiple of 64 (see above).
PADDED_VOCAB_SIZE = 50304
# GPT-2's context length: the published models learned 1,024 positions.
GPT2_CONTEXT = 1024

# The four published sizes (layers / heads / width); "custom" takes them from
# the command line instead.
MODEL_SIZES = {
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768),  # 124M parameters
    "gpt2-medium": dict(n_layer=24, n_head=16, n_embd=1024),  # 350M
    "gpt2-large": dict(n_layer=36, n_head=20, n_embd=1280),  # 774M
    "gpt2-xl": dict(n_layer=48, n_head=25, n_embd=1600),  # 1558M
}


@dataclass
class GPTConfig:
    """Shape of the network.  Validated on creation, with messages that name
    the field, so a bad size fails before any tensor is allocated."""

    block_size: int = GPT2_CONTEXT
    vocab_size: int = PADDED_VOCAB_SIZE
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True
    # Recompute each block's activations in the backward pass instead of
    # keeping them (torch.utils.checkpoint): less memory, about a third more
    # compute.  Same loss and gradients.
    activation_checkpointing: bool = False

    def __post_init__(self):
        for field in ("block_size", "vocab_size", "n_layer", "n_head", "n_embd"):
            if getattr(self, field) < 1:
                raise ValueError(f"{field} must be at least 1, not {getattr(self, field)}")
        if self.n_embd % self.n_head:
            raise ValueError(
                f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}): "
                "each head gets n_embd / n_head channels"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), not {self.dropout}")


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where each position sees only the past."""

    def __init__(self, config):
        super().__init__()
        # Query, key and value for all heads in one matrix multiply.
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.dropout = config.dropout

    def forward(self, x, cache=None):
        """`cache` (a LayerCache, generation only): the keys and values of
        the positions before x's, extended by x's own."""
        batch, time, channels = x.size()
        q, k, v = self.c_attn(x).split(channels, dim=2)
        # (B, T, C) -> (B, heads, T, head size)
        shape = (batch, time, self.n_head, channels // self.n_head)
        q, k, v = (t.view(shape).transpose(1, 2) for t in (q, k, v))
        if cache is not None and cache.length:
            k, v = cache.extend(k, v)
            # The new queries see every cached position and the new ones up
            # to themselves; one new token (the usual case) sees everything.
            past = k.size(2) - time
            mask = None if time == 1 else torch.ones(time, k.size(2), dtype=torch.bool, device=x.device).tril(past)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        else:
            if cache is not None:
                cache.extend(k, v)
            # Flash / memory-efficient kernels on GPU; is_causal builds the mask.
            y = F.scaled_dot_product_attention(
                q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True
            )
        y = y.transpose(1, 2).contiguous().view(batch, time, channels)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    """Position-wise feed-forward network, 4x wider than the residual stream."""

    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        # GPT-2 used the tanh approximation of GELU ("gelu_new" in Hugging Face).
        self.gelu = nn.GELU(approximate="tanh")
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    """One transformer layer: LayerNorm before each sub-layer, residual after."""

    def __init__(self, config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, cache=None):
        x = x + self.attn(self.ln_1(x), cache)
        return x + self.mlp(self.ln_2(x))


class LayerCache:
    """One layer's keys and values of the positions generated so far, in
    buffers allocated once for the whole context: (batch, heads, block_size,
    head size) each.  Generating with it computes each new token's keys and
    values once, instead of the whole prefix's again at every token."""

    def __init__(self, config, batch, device, dtype):
        shape = (batch, config.n_head, config.block_size, config.n_embd // config.n_head)
        self.keys = torch.empty(shape, device=device, dtype=dtype)
        self.values = torch.empty(shape, device=device, dtype=dtype)
        self.length = 0

    def extend(self, k, v):
        """Append the new positions' k and v; returns all of them so far."""
        end = self.length + k.size(2)
        self.keys[:, :, self.length : end] = k
        self.values[:, :, self.length : end] = v
        self.length = end
        return self.keys[:, :, :end], self.values[:, :, :end]


class KVCache:
    """The LayerCache of every layer, and how many positions they hold (the
    position of the next token).  gpt2/model/generate.py makes one per call."""

    def __init__(self, config, batch, device, dtype=torch.float32):
        self.layers = [LayerCache(config, batch, device, dtype) for _ in range(config.n_layer)]
        self.capacity = config.block_size

    @property
    def length(self):
        return self.layers[0].length


class GPT(nn.Module):
    """The language model: token ids in, next-token logits (and loss) out."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                wpe=nn.Embedding(config.block_size, config.n_embd),
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList(Block(config) for _ in range(config.n_layer)),
                ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # Weight tying (Press & Wolf, 2017), as GPT-2 does: one matrix both
        # embeds tokens and scores them (38.6M of the 124M parameters of gpt2).
        self.transformer.wte.weight = self.lm_head.weight
        # None: logits through lm_head, then F.cross_entropy.  Or a callable
        # (hidden_rows, lm_head_weight, target_rows) -> mean loss, used when
        # targets are given, so the (tokens x vocab) logits need not exist in
        # full (gpt2/cpu/linear_cross_entropy.py's ChunkedLoss, set by
        # gpt2/cpu/fast_paths.py).  Per instance: no other GPT is affected.
        self.output_loss = None
        self.apply(self._init_weights)
        # GPT-2 paper: scale the init of the projections that write into the
        # residual stream by 1/sqrt(N), N = 2 residual additions per layer, so
        # the variance of the stream does not grow with depth.
        residual_std = 0.02 / math.sqrt(2 * config.n_layer)
        for name, parameter in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(parameter, mean=0.0, std=residual_std)

    @staticmethod
    def _init_weights(module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx, targets=None, cache=None):
        """idx: (batch, time) token ids.  Returns (logits, loss); loss is None
        without targets.  Logits cover every position (batch, time, vocab).

        With `cache` (a KVCache, generation only), idx continues the tokens
        the cache holds: their positions start after the cached ones, and
        their keys and values are added to the cache.

        With targets and self.output_loss set, returns (None, loss) from
        output_loss instead, so the (tokens x 50,304) logits never exist in
        full (the chunked loss: half the peak memory of a small model on
        CPU, at the same speed; same loss and gradients up to float
        rounding)."""
        x = self.hidden(idx, cache)
        if targets is not None and self.output_loss is not None:
            return None, self.output_loss(x.view(-1, x.size(-1)), self.lm_head.weight, targets.view(-1))
        logits = self.lm_head(x)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))
        return logits, loss

    def hidden(self, idx, cache=None):
        """The final LayerNorm's output (batch, time, n_embd): what lm_head
        turns into logits.  For a caller that needs the logits of a few
        positions only (HellaSwag scores the ending tokens)."""
        _, time = idx.size()
        start = cache.length if cache is not None else 0
        if start + time > self.config.block_size:
            raise ValueError(f"sequence of {start + time} tokens exceeds block_size {self.config.block_size}")
        positions = torch.arange(start, start + time, dtype=torch.long, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(positions))
        recompute = self.config.activation_checkpointing and self.training and torch.is_grad_enabled()
        for index, block in enumerate(self.transformer.h):
            if recompute and cache is None:
                # Non-reentrant: works with torch.compile and DDP, and keeps
                # dropout's random draws the same in the recomputation.
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x, cache.layers[index] if cache is not None else None)
        return self.transformer.ln_f(x)

    def num_parameters(self, non_embedding=True):
        """Parameter count.  The position table is left out by default (as in
        the scaling-law papers); the token table stays, since as the tied
        output layer it does real compute."""
        total = sum(p.numel() for p in self.parameters())
        if non_embedding:
            total -= self.transformer.wpe.weight.numel()
        return total

    def flops_per_token(self):
        """Training FLOPs (forward + backward) per token, PaLM paper appendix B:
        6N for the weights plus 12*L*H*Q*T for attention scores and values."""
        cfg = self.config
        layers, heads, head_size, time = cfg.n_layer, cfg.n_head, cfg.n_embd // cfg.n_head, cfg.block_size
        return 6 * self.num_parameters() + 12 * layers * heads * head_size * time
