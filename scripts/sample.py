"""`make sample`: gpt2/sample.py with the Sampling options of .config as its
defaults (gpt2/sample.py FLAGS: SAMPLE_PROMPT,
SAMPLE_NUM_SAMPLES, ...), then the flags given.

    make sample                          # out/best.pt
    make sample CKPT=out/ckpt.pt ARGS="--prompt ROMEO: --temperature 0"
"""

import argparse
import sys

from gpt2 import sample


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=".config", help="the .config to take defaults from (if it exists)")
    parser.add_argument("--ckpt", default="", help="the checkpoint (empty: gpt2/sample.py's default)")
    args, rest = parser.parse_known_args(argv)
    return sample.main(["--config", args.config, *(["--ckpt", args.ckpt] if args.ckpt else []), *rest])


if __name__ == "__main__":
    sys.exit(main())
