"""Text from a trained checkpoint: `make sample` (nanoGPT's sample.py).

    python gpt2/sample.py                                   # out/best.pt, Kconfig's Sampling defaults
    python gpt2/sample.py --ckpt out/ckpt.pt --prompt "ROMEO:" --num-samples 2 --temperature 0
    python gpt2/sample.py --prompt FILE:prompt.txt --max-new-tokens 500 --seed 7
    make sample CKPT=out/best.pt ARGS="--top-k 50"          # .config's Sampling options, then ARGS

Any checkpoint gpt2/train.py writes works (every model size, pruned or
not): it holds the model's shape and weights.  Defaults come from the
"Sampling" menu of gpt2/Kconfig (and from a .config with --config, as
`make sample` passes); flags win.  The same seed, checkpoint and flags give
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

import argparse
import sys
import time
from pathlib import Path

import torch

from gpt2.run.checkpoint import BEST, UnreadableCheckpoint, read_checkpoint_file
from gpt2.errors import UsageError
from gpt2.model.generate import encode_prompt, prompt_text, sample_texts
from gpt2.model.gpt import GPT, GPTConfig
from lib.kconfig import ConfigError, load_tree, read_config
from lib.options import options

# gpt2/sample.py's flags that take their defaults from the Sampling menu.
FLAGS = {
    "SAMPLE_PROMPT": "--prompt",
    "SAMPLE_NUM_SAMPLES": "--num-samples",
    "SAMPLE_MAX_NEW_TOKENS": "--max-new-tokens",
    "SAMPLE_TEMPERATURE": "--temperature",
    "SAMPLE_TOP_K": "--top-k",
    "SAMPLE_SEED": "--seed",
}
DEFAULT_CHECKPOINT = f"out/{BEST}"
SEPARATOR = "-" * 40


def build_parser(kconf):
    """The flags, with defaults from `kconf` (the Kconfig tree, with a
    .config loaded or not) and its types and ranges."""
    parser = argparse.ArgumentParser(prog="gpt2/sample.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", default=DEFAULT_CHECKPOINT, help="checkpoint to sample from (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto: cuda when there is one")
    parser.add_argument("--no-kv-cache", dest="kv_cache", action="store_false",
                        help="run the whole context again for every token (slower; for comparison)")
    parser.add_argument("--config", default=None, help="a .config whose Sampling options are the defaults")
    by_name = {option.name: option for option in options(kconf)}
    for name, flag in FLAGS.items():
        option = by_name[name]

        def typed(text, option=option):
            try:
                return option.parse(text)
            except ValueError as err:
                raise argparse.ArgumentTypeError(str(err)) from None

        prompt = option.prompt.replace("%", "%%")  # argparse formats help with %
        parser.add_argument(flag, type=typed, default=option.value(kconf),
                            help=f"{prompt} [Kconfig {name}] (default: %(default)r)")
    return parser


def parse_args(argv):
    """Flags over the defaults of --config's .config (when given) over Kconfig's."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, _ = pre.parse_known_args(argv)
    try:
        kconf = read_config(known.config) if known.config and Path(known.config).is_file() else load_tree()
    except ConfigError as err:
        raise UsageError(str(err)) from None
    return build_parser(kconf).parse_args(argv)


def pick_device(name):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device {name}: not a device; use cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available here; use --device cpu")
    return device


def load_model(path, device):
    """The GPT a gpt2lab checkpoint holds, in eval mode on `device`."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"no checkpoint at {path}; train one with `make train`, or name one with --ckpt (CKPT=)")
    try:
        state = read_checkpoint_file(path)
    except UnreadableCheckpoint as exc:
        raise UsageError(f"cannot read the checkpoint {path} ({str(exc)[:200]}); it is damaged or not a "
                         "torch file: train again, or name another with --ckpt") from None
    if not isinstance(state, dict) or not {"model", "model_config"} <= state.keys():
        raise UsageError(f"{path} is not a gpt2lab checkpoint (no model and model_config); "
                         "give one gpt2/train.py wrote (out/best.pt or out/ckpt.pt)")
    try:
        model = GPT(GPTConfig(**state["model_config"]))
        model.load_state_dict(state["model"])
    except (TypeError, ValueError, RuntimeError) as exc:
        reason = str(exc).strip().splitlines()[0]
        raise UsageError(f"{path}: its weights do not fit its model config ({reason[:200]}); "
                         "the checkpoint is damaged") from None
    return model.to(device).eval(), state.get("iter_num")


def main(argv=None):
    """Print the samples; exit status 0, or 1 after one `error:` line."""
    try:
        args = parse_args(argv)
        device = pick_device(args.device)
        model, iter_num = load_model(args.ckpt, device)
        try:
            prompt = prompt_text(args.prompt)
        except OSError as exc:
            raise UsageError(f"--prompt {args.prompt}: cannot read it ({exc.strerror}); give FILE:<a readable "
                             "file> or the prompt text itself") from None
        generator = torch.Generator(device=device).manual_seed(args.seed)
        prompt_ids = encode_prompt(prompt)
        start = time.perf_counter()
        texts = sample_texts(model, prompt_ids, num_samples=args.num_samples, max_new_tokens=args.max_new_tokens,
                             temperature=args.temperature, top_k=args.top_k, generator=generator,
                             use_cache=args.kv_cache)
        seconds = time.perf_counter() - start
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    for text in texts:
        print(prompt + text, flush=True)
        print(SEPARATOR, flush=True)
    tokens = args.num_samples * args.max_new_tokens
    print(f"{args.num_samples} x {args.max_new_tokens} tokens from {args.ckpt} (iter {iter_num}) on {device} "
          f"in {seconds:.2f} s: {tokens / seconds:,.0f} tokens/s{'' if args.kv_cache else ' (no KV cache)'}",
          file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
