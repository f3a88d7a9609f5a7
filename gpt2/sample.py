"""Text from a trained checkpoint: `make sample` (nanoGPT's sample.py).

    python gpt2/sample.py                                   # OUT_DIR's best.pt (out/), Kconfig's Sampling defaults
    python gpt2/sample.py --ckpt out/ckpt.pt --prompt "ROMEO:" --num-samples 2 --temperature 0
    python gpt2/sample.py --prompt FILE:prompt.txt --max-new-tokens 500 --seed 7
    make sample CKPT=out/best.pt ARGS="--top-k 50"          # .config's Sampling options, then ARGS

Any checkpoint gpt2/train.py writes works (every model size, pruned or
not): it holds the model's shape and weights.  Flags and defaults come from
the "Sampling" menu of gpt2/Kconfig with DEVICE and OUT_DIR (gpt2/cli.py:
--sample-top-k, also --top-k), and from a .config with --config, as `make
sample` passes; flags win.  Without --ckpt the checkpoint is OUT_DIR's
best.pt.  A generation that takes more than a few seconds shows its
progress on stderr.  The same seed, checkpoint and flags give
the same text on the CPU.  A missing, damaged or foreign checkpoint is one
`error:` line and exit status 1.
"""

# Run as a file, gpt2/ would come first on sys.path and its modules could
# shadow packages of the same name: run as the module instead (as train.py).
if __name__ == "__main__" and not __package__:
    import os
    import sys

    _options = sys.orig_argv[1 : len(sys.orig_argv) - len(sys.argv)]
    os.execv(sys.executable, [sys.executable, *_options, "-m", "gpt2.sample", *sys.argv[1:]])

import sys
import time

import torch

from gpt2.cli import Tool
from gpt2.errors import UsageError
from gpt2.model.generate import encode_prompt, prompt_text, sample_texts
from gpt2.run.checkpoint import load_model
from gpt2.run.checkpoint_source import chosen_checkpoint
from gpt2.run.precision import pick_device
from lib.progress import Progress

SEPARATOR = "-" * 40


def _own_flags(parser):
    parser.add_argument("--ckpt", default=None,
                        help="checkpoint to sample from (default: OUT_DIR's best.pt, --out-dir below)")
    parser.add_argument("--no-kv-cache", dest="kv_cache", action="store_false",
                        help="run the whole context again for every token (slower; for comparison)")


# Flags (gpt2/cli.py): the "Sampling" menu of gpt2/Kconfig (--sample-prompt,
# also --prompt, ...), DEVICE and OUT_DIR (where the checkpoint is), named as
# for train.py; defaults from Kconfig, or from --config's .config.
TOOL = Tool("gpt2/sample.py", __doc__.split("\n\n")[0], menus=("Sampling",), symbols=("DEVICE", "OUT_DIR"),
            extra=_own_flags)


def build_parser(kconf=None):
    """The command line, defaults from `kconf` (the Kconfig tree, with a
    .config loaded or not)."""
    return TOOL.parser(kconf)


def parse_args(argv):
    """Flags over the defaults of --config's .config (when given) over Kconfig's."""
    return TOOL.parse_args(argv)


def read_prompt(prompt):
    """--prompt's text: the text itself, or FILE:path's UTF-8 text."""
    try:
        return prompt_text(prompt)
    except OSError as exc:
        raise UsageError(f"--prompt {prompt}: cannot read it ({exc.strerror}); give FILE:<a readable "
                         "file> or the prompt text itself") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"--prompt {prompt}: not UTF-8 text (byte {exc.start} is {exc.object[exc.start]:#04x}); "
                         "give a UTF-8 text file") from None


def main(argv=None):
    """Print the samples; exit status 0, or 1 after one `error:` line.
    Progress goes to stderr while a long generation runs (lib/progress.py)."""
    try:
        args = parse_args(argv)
        device = pick_device(args.device, "sampling")
        # A file, or a tracker artifact reference (trackio:P/checkpoint-R:best, docs/tracking.md).
        ckpt = chosen_checkpoint(args.ckpt, args.out_dir)
        model, checkpoint = load_model(ckpt)
        model, iter_num = model.to(device), checkpoint.iter_num
        prompt = read_prompt(args.sample_prompt)
        generator = torch.Generator(device=device).manual_seed(args.sample_seed)
        prompt_ids = encode_prompt(prompt)
        progress = Progress(args.sample_max_new_tokens, batch=args.sample_num_samples, stream=sys.stderr,
                            clock=time.perf_counter)
        start = time.perf_counter()
        try:
            texts = sample_texts(model, prompt_ids, num_samples=args.sample_num_samples,
                                 max_new_tokens=args.sample_max_new_tokens, temperature=args.sample_temperature,
                                 top_k=args.sample_top_k, generator=generator, use_cache=args.kv_cache,
                                 on_token=progress.update)
        finally:
            progress.close()
        seconds = time.perf_counter() - start
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    for text in texts:
        print(prompt + text, flush=True)
        print(SEPARATOR, flush=True)
    tokens = args.sample_num_samples * args.sample_max_new_tokens
    print(f"{args.sample_num_samples} x {args.sample_max_new_tokens} tokens from {ckpt} (iter {iter_num}) on "
          f"{device} in {seconds:.2f} s: {tokens / seconds:,.0f} tokens/s{'' if args.kv_cache else ' (no KV cache)'}",
          file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
