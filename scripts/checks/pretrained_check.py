"""A gpu-check step for a machine with internet access: OpenAI's GPT-2 124M,
downloaded through INIT_FROM's code (gpt2/model/pretrained.py), scored on
the validation split of a prepared web-text corpus, against nanoGPT's table
of OpenAI's checkpoints on OpenWebText (124M: val loss 3.12).

    python -m scripts.checks.pretrained_check --work-dir /tmp/pretrained-check
    python -m scripts.checks.pretrained_check --dataset finewebedu    # no reference: the loss is reported

`pretrained_check(work, say)` is the check itself (it returns a dict for a
report); this main() runs it and prints that dict.
The corpus is prepared as training would (gpt2/data/prepare.py, the first
--max-tokens tokens of the stream); its val split is scored in
--eval-iters batches of 8 x 1,024 tokens, bf16 on CUDA (float32 elsewhere).
nanoGPT's 3.12 comes from its own 0.05% random split of all of OpenWebText,
so 0.08 either side passes; a 50,304-row zero-padded vocabulary would score
far worse (gpt2/model/hf_format.py).
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from gpt2 import cli
from gpt2.configs import ModelConfig
from gpt2.data.batches import Batches
from gpt2.data.prepare import ensure_prepared
from gpt2.model.pretrained import build_model
from lib.errors import UserError
from lib.plugins import from_flags

REFERENCE = {"openwebtext": 3.12}  # nanoGPT README: OpenAI's gpt2 (124M) on OpenWebText
TOLERANCE = 0.08
BLOCK = 1024


def pretrained_config():
    """The ModelConfig of OpenAI's 124M, through train.py's own flags (so a
    field added to ModelConfig later is filled like any run's)."""
    flags = vars(cli.parse_args(["--model", "gpt2", "--init-from", "gpt2", "--block-size", str(BLOCK),
                                 "--dropout", "0", "--bias"]))
    return from_flags(ModelConfig, flags)


def pretrained_check(work, say=print, dataset="openwebtext", max_tokens=20_000_000, eval_iters=100,
                     batch_size=8, device=None, data_dir=None):
    """Download (or find in the Hugging Face cache) OpenAI's 124M, evaluate
    its val loss on `dataset`'s prepared val split; returns a dict for
    gpu-check.json with "passed" (None when there is no reference).
    Raises UserError (no network, no data) with one line."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    work = Path(work)
    start = time.perf_counter()
    config = pretrained_config()
    model = build_model(config, device).eval()
    source = model.init_source
    say(f"pretrained: {source['repo']} ({source['sha256'][:12]}...) loaded in {time.perf_counter() - start:.0f} s")
    folder = ensure_prepared(dataset, data_dir or work / "data", max_tokens=max_tokens, log=say)
    batches = Batches(folder, block_size=BLOCK, batch_size=batch_size, device=device, train_seed=1, eval_seed=0)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    losses = []
    with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=device.type == "cuda"):
        for _, (x, y) in batches.eval_batches("val", eval_iters):
            losses.append(model(x, y)[1].float().item())
    loss = sum(losses) / len(losses)
    reference = REFERENCE.get(dataset)
    passed = None if reference is None else abs(loss - reference) <= TOLERANCE
    verdict = "" if reference is None else f" (nanoGPT {reference:.2f}: {'ok' if passed else 'FAILED'})"
    say(f"pretrained: gpt2 124M val loss on {dataset} {loss:.3f} over {len(losses)} x {batch_size} x {BLOCK} tokens"
        + verdict)
    return {"dataset": dataset, "val_loss": loss, "reference": reference, "passed": passed,
            "eval_tokens": len(losses) * batch_size * BLOCK, "weights_sha256": source["sha256"],
            "vocab_rows": model.lm_head.weight.shape[0], "seconds": time.perf_counter() - start}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-dir", default="pretrained-check")
    parser.add_argument("--prepared", default=None, metavar="DIR",
                        help="a data folder that already holds the prepared corpus")
    parser.add_argument("--corpus", default="openwebtext", choices=["openwebtext", "finewebedu"])
    parser.add_argument("--corpus-tokens", type=int, default=20_000_000, help="tokens of the corpus to prepare")
    parser.add_argument("--batches", type=int, default=100, help="validation batches to score")
    parser.add_argument("--out", default=None, help="write the result as JSON here")
    args = parser.parse_args(argv)
    try:
        result = pretrained_check(args.work_dir, dataset=args.corpus, max_tokens=args.corpus_tokens,
                                  eval_iters=args.batches, data_dir=args.prepared)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["passed"] is not False else 1


if __name__ == "__main__":
    sys.exit(main())
