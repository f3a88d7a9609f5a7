"""`make eval`: gpt2/eval/cli.py with .config as its defaults (`--config`,
when it exists), the checkpoint CKPT and the tasks TASKS, then the flags given.

    make eval CKPT=out/best.pt
    make eval CKPT=out/best.pt TASKS=hellaswag,harness ARGS="--eval-hellaswag-limit 200"
"""

import argparse
import sys
from pathlib import Path

from gpt2.eval import cli


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=".config", help="the .config to take defaults from (if it exists)")
    parser.add_argument("--ckpt", default="", help="the checkpoint (empty: OUT_DIR's best.pt)")
    parser.add_argument("--tasks", default="", help="comma-separated eval tasks (empty: EVAL_TASKS)")
    args, rest = parser.parse_known_args(argv)
    config = ["--config", args.config] if Path(args.config).is_file() else []
    return cli.main([*config, *(["--ckpt", args.ckpt] if args.ckpt else []),
                     *(["--eval-tasks", args.tasks] if args.tasks else []), *rest])


if __name__ == "__main__":
    sys.exit(main())
