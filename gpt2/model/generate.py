"""Text from a GPT: the sampling loop shared by `make sample` (gpt2/sample.py)
and the samples logged during training (gpt2/run/samples.py).

nanoGPT's generate(), with two differences:
  * a KV cache (gpt2/model/gpt.py KVCache): the prompt is run once, then each
    new token alone, its keys and values appended to the cache; without it
    every token runs the whole prefix again (see docs/tracking.md for the
    tokens/s of both);
  * every random draw takes an explicit torch.Generator, so sampling never
    moves the global RNG a training run resumes from, and the same seed
    gives the same text.

When the text outgrows the model's context (block_size), the oldest tokens
are dropped: without the cache the last block_size tokens are run again at
every step (as nanoGPT does); with it, the cache is refilled from the last
half context, so positions stay within the learned ones at the cost of one
prefill every block_size / 2 tokens.
"""

from pathlib import Path

import torch

from gpt2.data.tokenizer import EOT_TOKEN, N_VOCAB, gpt2_encoding

FILE_PREFIX = "FILE:"


def prompt_text(prompt):
    """The prompt a --prompt value names: the text itself, or with
    'FILE:path' that file's text.  OSError when the file cannot be read."""
    if prompt.startswith(FILE_PREFIX):
        return Path(prompt[len(FILE_PREFIX) :]).expanduser().read_text(encoding="utf-8")
    return prompt


def encode_prompt(text):
    """Token ids of `text`; an empty prompt starts from <|endoftext|>, the
    token GPT-2 saw between documents (an unconditional sample)."""
    ids = gpt2_encoding().encode_ordinary(text)
    return ids or [EOT_TOKEN]


def decode(ids):
    """Text of token ids; ids past GPT-2's 50,257 (the padding rows of the
    vocabulary, never trained on) and broken UTF-8 become U+FFFD."""
    encoding = gpt2_encoding()
    return encoding.decode([i for i in ids if i < encoding.n_vocab], errors="replace")


def next_token(logits, temperature, top_k, generator):
    """One token id per row of `logits` (batch, vocab): argmax at
    temperature 0, otherwise a draw from softmax(logits / temperature)
    restricted to the top_k most likely tokens (0: all)."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits.float() / temperature
    if not top_k or top_k >= logits.size(-1):
        return torch.multinomial(torch.softmax(logits, dim=-1), num_samples=1, generator=generator)
    # The softmax and the draw over the k best only: the same distribution
    # as masking the others to -inf, without a pass over all 50,304.
    best, ids = torch.topk(logits, top_k)
    choice = torch.multinomial(torch.softmax(best, dim=-1), num_samples=1, generator=generator)
    return ids.gather(-1, choice)


@torch.no_grad()
def generate(model, idx, max_new_tokens, *, temperature=1.0, top_k=0, generator=None, use_cache=True,
             on_token=None):
    """Append `max_new_tokens` tokens to idx (batch, time) and return the
    whole (batch, time + max_new_tokens).  The model must be in eval mode
    (no dropout); `generator` draws every sample (None: greedy only).
    `on_token(n)`, when given, is called after the n-th new token (of every
    row); it sees no tensor, so it cannot change what is drawn."""
    if temperature != 0 and generator is None:
        raise ValueError("sampling at a temperature above 0 needs a generator (a seeded torch.Generator)")
    from gpt2.model.gpt import KVCache

    block_size = model.config.block_size
    cache, pending = None, idx  # pending: the tokens the model has not seen yet
    for step in range(max_new_tokens):
        if not use_cache:
            logits, _ = model(idx[:, -block_size:])
        else:
            if cache is None or cache.length + pending.size(1) > block_size:
                # A fresh cache from the last half context (all of it at the start).
                keep = block_size if cache is None else block_size // 2
                cache = KVCache(model.config, idx.size(0), idx.device, model.lm_head.weight.dtype)
                pending = idx[:, -keep:]
            logits, _ = model(pending, cache=cache)
        # GPT-2's ids only: the padding rows of a model trained from scratch
        # (gpt2/model/gpt.py) are never drawn, at any temperature.
        token = next_token(logits[:, -1, :N_VOCAB], temperature, top_k, generator)
        idx = torch.cat((idx, token), dim=1)
        pending = token
        if on_token is not None:
            on_token(step + 1)
    return idx


def sample_texts(model, prompt_ids, *, num_samples, max_new_tokens, temperature, top_k, generator, use_cache=True,
                 on_token=None):
    """`num_samples` continuations of `prompt_ids` (a list of ids), decoded:
    [text, ...] without the prompt.  `on_token`: as for generate()."""
    device = model.lm_head.weight.device
    idx = torch.tensor([prompt_ids] * num_samples, dtype=torch.long, device=device)
    out = generate(model, idx, max_new_tokens, temperature=temperature, top_k=top_k, generator=generator,
                   use_cache=use_cache, on_token=on_token)
    return [decode(row[len(prompt_ids) :].tolist()) for row in out]
