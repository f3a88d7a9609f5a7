"""`make sample`: gpt2/sample.py with .config as its defaults (`--config`,
read strictly through kconfiglib: the Sampling options, DEVICE, and OUT_DIR,
whose best.pt is the checkpoint), then the flags given.

    make sample                          # OUT_DIR/best.pt of .config (out/best.pt by default)
    make sample CKPT=out/ckpt.pt ARGS="--prompt ROMEO: --temperature 0"
"""

import argparse
import sys
from pathlib import Path

from gpt2 import sample


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=".config", help="the .config to take defaults from (if it exists)")
    parser.add_argument("--ckpt", default="", help="the checkpoint (empty: OUT_DIR's best.pt)")
    args, rest = parser.parse_known_args(argv)
    config = ["--config", args.config] if Path(args.config).is_file() else []
    return sample.main([*config, *(["--ckpt", args.ckpt] if args.ckpt else []), *rest])


if __name__ == "__main__":
    sys.exit(main())
