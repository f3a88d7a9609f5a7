"""HellaSwag: 4-way sentence completion, scored as a language model scores a
multiple choice (the log-likelihood of each ending given the context, the 4
endings in one batched forward).

Three numbers, never to be compared with one another's kind:

  acc                  argmax of the summed log-probs of the ending (llm.c's tokens)
  acc_norm_llmc        argmax of the mean log-prob per ending token: llm.c's
                       "completion style" (OpenAI's 124M: 29.55)
  acc_harness,         lm-evaluation-harness's hellaswag task: its preprocessing
  acc_norm_harness     of the text, its tokenization of context + ending, and
                       acc_norm = log-likelihood / ending length in characters
                       (OpenAI's 124M: acc 28.92, acc_norm 31.14)

llm.c's rendering: context = item["ctx"] as is, each ending " " + ending,
tokenized apart.  The harness's: context = preprocess(activity_label + ": "
+ ctx_a + " " + ctx_b.capitalize()), endings preprocess(ending), the
continuation " " + ending tokenized as the tail of the whole string.

The file is the authors' own (rowanz/hellaswag, data/hellaswag_val.jsonl),
downloaded once into DATA_DIR/hellaswag/ (or EVAL_HELLASWAG_FILE).  A
context longer than the model's block size is cropped from the left (as
the harness does); the items cropped are counted.
"""

import hashlib
import json
import re
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from gpt2.data.sources import file_sha256
from gpt2.data.tokenizer import gpt2_encoding
from lib.atomic import write_bytes_atomically
from lib.errors import UserError
from lib.progress import Progress

NAME = "hellaswag"
DESCRIPTION = "HellaSwag validation (10,042 items): acc, acc_norm (llm.c style), acc/acc_norm (harness style)"
URL = "https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_val.jsonl"
FILE_NAME = "hellaswag_val.jsonl"
# The authors' file as published: its size and sha256 as TensorFlow
# Datasets records them for this URL (tensorflow_datasets/url_checksums/
# hellaswag.txt).  Another file is refused as a download and as the cache,
# and scored with a notice when named by EVAL_HELLASWAG_FILE (a subset).
SIZE = 12_246_618
SHA256 = "0aa3b88843990f3f10a97b9575c94d7b71fb2205240ba04ae4884d9e9c992588"
METRICS = ("acc", "acc_norm_llmc", "acc_harness", "acc_norm_harness")


class HellaSwagError(UserError):
    """The HellaSwag file cannot be had or read; str() says how to get it."""


# ----------------------------------------------------------------------------
# The file


def cached_path(data_dir):
    return Path(data_dir) / NAME / FILE_NAME


def download(target, url=URL, timeout=60):
    """Fetch `url` into `target` (atomically) if its sha256 is the authors'."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data = response.read()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise HellaSwagError(
            f"cannot download HellaSwag from {url} ({reason}); on a machine without internet, fetch that file "
            f"elsewhere and put it at {target} or name it with --eval-hellaswag-file (EVAL_HELLASWAG_FILE)"
        ) from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != SHA256:
        raise HellaSwagError(f"the download from {url} ({len(data):,} bytes) has sha256 {digest}, not the authors' "
                             f"{SHA256} ({SIZE:,} bytes); nothing was kept: try again, or give a local copy with "
                             "--eval-hellaswag-file")
    target.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomically(target, data)
    print(f"downloaded HellaSwag ({len(data):,} bytes, sha256 {digest}) to {target}", file=sys.stderr)
    return target


def locate(local_file="", data_dir="data"):
    """The HellaSwag file to read: `local_file` when given, else the cache
    under `data_dir`, downloaded once."""
    if local_file:
        path = Path(local_file)
        if not path.is_file():
            raise HellaSwagError(f"--eval-hellaswag-file {path}: no such file; give the path of a "
                                 f"hellaswag_val.jsonl (the authors' is {URL})")
        if file_sha256(path) != SHA256:  # users subset the file: score what is given, and say so
            print(f"notice: {path} is not the authors' {FILE_NAME} (sha256 {SHA256}): scoring its items as given",
                  file=sys.stderr)
        return path
    path = cached_path(data_dir)
    if path.is_file():
        if file_sha256(path) != SHA256:
            raise HellaSwagError(f"{path} is not the authors' {FILE_NAME} (another sha256 than {SHA256}): it is "
                                 "damaged; delete it to download it again, or name a file of your own with "
                                 "--eval-hellaswag-file")
        return path
    return download(path)


def read_items(path, limit=0):
    """The items of a HellaSwag jsonl (the first `limit`, 0: all)."""
    items = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                endings = item["endings"]
                ok = isinstance(endings, list) and len(endings) == 4 and int(item["label"]) in range(4)
                for key in ("ctx", "ctx_a", "ctx_b", "activity_label"):
                    item[key]  # noqa: B018
            except (ValueError, KeyError, TypeError):
                ok = False
            if not ok:
                raise HellaSwagError(f"{path} line {number} is not a HellaSwag item (JSON with ctx, ctx_a, ctx_b, "
                                     "activity_label, 4 endings and a label 0-3); give the authors' "
                                     f"{FILE_NAME} or a file of its format")
            items.append(item)
            if limit and len(items) == limit:
                break
    if not items:
        raise HellaSwagError(f"{path} holds no HellaSwag items")
    return items


# ----------------------------------------------------------------------------
# Rendering: token rows for the 4 endings, in each style


def harness_preprocess(text):
    """lm-evaluation-harness's hellaswag preprocess(): WikiHow's bracket
    artifacts removed."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


@dataclass(frozen=True)
class Rendered:
    """One item in one style: context tokens and each ending's tokens."""

    context: list
    endings: list  # 4 token lists
    label: int
    ending_chars: tuple = ()  # harness: len(choice) in characters


def render_llmc(item):
    enc = gpt2_encoding()
    context = enc.encode_ordinary(item["ctx"])
    endings = [enc.encode_ordinary(" " + ending) for ending in item["endings"]]
    return Rendered(context, endings, int(item["label"]))


def render_harness(item):
    """The harness's request: (query, " " + choice), its continuation the
    whole string's tokens after the query's (HFLM._encode_pair)."""
    enc = gpt2_encoding()
    query = harness_preprocess(item["activity_label"] + ": " + item["ctx_a"] + " " + item["ctx_b"].capitalize())
    choices = [harness_preprocess(ending) for ending in item["endings"]]
    endings = []
    for choice in choices:
        context, continuation = query, " " + choice
        spaces = len(context) - len(context.rstrip())
        if spaces:  # the harness moves trailing whitespace into the continuation
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        whole = enc.encode_ordinary(context + continuation)
        context_tokens = enc.encode_ordinary(context)
        endings.append((context_tokens, whole[len(context_tokens):]))
    # The context tokens are the same for every choice.
    return Rendered(endings[0][0], [tail for _, tail in endings], int(item["label"]),
                    tuple(float(len(c)) for c in choices))


# ----------------------------------------------------------------------------
# Scoring


def ending_logprobs(model, rendered, block_size, device):
    """(sum of log-probs, number of tokens) of each ending, the 4 rows in one
    forward, and whether the context was cropped.  Rows longer than
    block_size + 1 tokens keep their last block_size + 1 (left crop)."""
    rows, masks, cropped = [], [], False
    for ending in rendered.endings:
        row = rendered.context + ending
        mask = [0] * len(rendered.context) + [1] * len(ending)
        if len(row) > block_size + 1:
            row, mask, cropped = row[-(block_size + 1):], mask[-(block_size + 1):], True
        rows.append(row)
        masks.append(mask)
    width = max(len(row) for row in rows)
    tokens = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width)
    for i, (row, m) in enumerate(zip(rows, masks)):
        tokens[i, : len(row)] = torch.tensor(row)
        mask[i, : len(m)] = torch.tensor(m, dtype=mask.dtype)
    tokens = tokens.to(device)
    # Logits of the ending tokens only: the context's and the padding's
    # would be (4 x tokens x 50,304) numbers computed to be thrown away.
    ending = mask[:, 1:].to(device).bool()
    row_of = torch.arange(len(rows), device=device).unsqueeze(1).expand_as(ending)[ending]
    logits = model.lm_head(model.hidden(tokens[:, :-1])[ending]).float()
    logprobs = -F.cross_entropy(logits, tokens[:, 1:][ending], reduction="none")
    sums = torch.zeros(len(rows), device=device).index_add_(0, row_of, logprobs).double().cpu()
    counts = ending.sum(dim=1).double().cpu()
    return sums, counts, cropped


def score_item(model, item, block_size, device):
    """[acc, acc_norm_llmc, acc_harness, acc_norm_harness] (each 0 or 1) and
    the number of styles whose context was cropped, for one item."""
    llmc = render_llmc(item)
    sums, counts, cropped_llmc = ending_logprobs(model, llmc, block_size, device)
    harness = render_harness(item)
    h_sums, _, cropped_harness = ending_logprobs(model, harness, block_size, device)
    chars = torch.tensor(harness.ending_chars, dtype=torch.float64)
    label = llmc.label
    correct = [
        int(sums.argmax().item() == label),
        int((sums / counts).argmax().item() == label),
        int(h_sums.argmax().item() == label),
        int((h_sums / chars).argmax().item() == label),
    ]
    return correct, int(cropped_llmc or cropped_harness)


@torch.no_grad()
def score_items(model, items, *, block_size, device, rank=0, world_size=1, autocast=None, all_reduce=None,
                progress=None):
    """Score `items`, rank r taking items r, r + world_size, ...; with
    `all_reduce` (a sum over the ranks) every rank gets the totals.  The
    per-item 0/1 values are integers, so any sharding sums to the same
    numbers.  `progress(done, table)` is called after each item.
    Returns {metric: accuracy, "items": n, "cropped": n}."""
    model.eval()
    table = torch.zeros(len(items), len(METRICS) + 1, dtype=torch.float64)
    for done, index in enumerate(range(rank, len(items), world_size), 1):
        if autocast is not None:
            with autocast():
                correct, cropped = score_item(model, items[index], block_size, device)
        else:
            correct, cropped = score_item(model, items[index], block_size, device)
        table[index] = torch.tensor([*correct, cropped], dtype=torch.float64)
        if progress is not None:
            progress(done, table)
    if all_reduce is not None:
        table = all_reduce(table.to(device)).cpu()
    totals = table.sum(dim=0).tolist()
    result = {name: totals[i] / len(items) for i, name in enumerate(METRICS)}
    result["items"] = len(items)
    result["cropped"] = int(totals[-1])
    return result


def run(ctx):
    """The task for `make eval`: {metrics}, and a note of the cropped items."""
    path = locate(ctx.args.eval_hellaswag_file, ctx.args.data_dir)
    items = read_items(path, ctx.args.eval_hellaswag_limit)
    start, column = time.perf_counter(), METRICS.index("acc_norm_llmc")
    progress = Progress(len(items), stream=sys.stderr, label="hellaswag", unit="items")  # lib/progress.py

    def update(done, table):
        progress.note = lambda n: f"acc_norm_llmc {table[:, column].sum().item() / n:.4f} so far"
        progress.update(done)

    result = score_items(ctx.model, items, block_size=ctx.model.config.block_size, device=ctx.device,
                         progress=update)
    progress.close()
    seconds = time.perf_counter() - start
    print(f"hellaswag: {len(items):,} items in {seconds:.1f} s ({len(items) / seconds:.1f} items/s)", file=sys.stderr)
    if result["cropped"]:
        print(f"notice: hellaswag: {result['cropped']} of {len(items)} items had a context longer than "
              f"block_size {ctx.model.config.block_size}: cropped from the left", file=sys.stderr)
    return {f"hellaswag_{key}": value for key, value in result.items()}
