"""Tokenize a dataset into <data-dir>/<dataset>/{train,val}.bin + meta.json
(the work itself: gpt2/data/prepare.py).

    python gpt2/prepare_data.py --dataset shakespeare
    python gpt2/prepare_data.py --dataset shakespeare --data-input input.txt   # or --input
    python gpt2/prepare_data.py --dataset finewebedu --data-max-tokens 10000000  # or --max-tokens
    python gpt2/prepare_data.py --config .config      # the dataset and data options of .config

Flags are the "Dataset" menu of gpt2/Kconfig, named as for train.py
(gpt2/cli.py); defaults come from Kconfig, or from --config's file.
"""

# Run as a file, Python puts gpt2/ first on sys.path, where its folders
# could shadow packages of the same name: run the same command as the module
# gpt2.prepare_data instead, keeping the interpreter's own options (-u, -X ...).
if __name__ == "__main__" and not __package__:
    import os
    import sys

    _options = sys.orig_argv[1 : len(sys.orig_argv) - len(sys.argv)]
    os.execv(sys.executable, [sys.executable, *_options, "-m", "gpt2.prepare_data", *sys.argv[1:]])

import sys

from gpt2.cli import Tool
from gpt2.data.prepare import _count, ensure_prepared
from lib.errors import UserError


def _own_flags(parser):
    parser.add_argument("--workers", type=_count(1), default=None, help="CPUs to tokenize on (default: all)")


# The "Dataset" menu of gpt2/Kconfig, as for train.py: --dataset, --data-dir,
# --data-input (also --input), --data-max-tokens (also --max-tokens).
TOOL = Tool("gpt2/prepare_data.py", __doc__, menus=("Dataset",), extra=_own_flags)


def build_parser(kconf=None):
    """The command line (gpt2/cli.py): the Dataset menu's options and --workers."""
    return TOOL.parser(kconf)


def main(argv=None):
    args = TOOL.parse_args(argv)
    try:
        ensure_prepared(args.dataset, args.data_dir, args.data_input or None, args.data_max_tokens,
                        num_workers=args.workers)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
