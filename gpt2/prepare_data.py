"""Tokenize a dataset into <data-dir>/<dataset>/{train,val}.bin + meta.json
(the work itself: gpt2/data/prepare.py).

    python gpt2/prepare_data.py --dataset shakespeare
    python gpt2/prepare_data.py --dataset shakespeare --input input.txt
    python gpt2/prepare_data.py --dataset finewebedu --max-tokens 10000000
"""

# Run as a file, Python puts gpt2/ first on sys.path, where its folders
# could shadow packages of the same name: run the same command as the module
# gpt2.prepare_data instead, keeping the interpreter's own options (-u, -X ...).
if __name__ == "__main__" and not __package__:
    import os
    import sys

    _options = sys.orig_argv[1 : len(sys.orig_argv) - len(sys.argv)]
    os.execv(sys.executable, [sys.executable, *_options, "-m", "gpt2.prepare_data", *sys.argv[1:]])

import argparse
import sys

from gpt2.data.prepare import DATASETS, DataError, _count, ensure_prepared


def build_parser():
    """The command line; --data-dir and --max-tokens default to Kconfig's
    DATA_DIR and DATA_MAX_TOKENS, as for train.py."""
    from lib.kconfig import default_value, load_tree  # Kconfig holds the defaults

    syms = load_tree().syms
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", required=True, choices=sorted(DATASETS), help="dataset to prepare")
    parser.add_argument(
        "--data-dir",
        default=default_value(syms["DATA_DIR"]),
        help="folder holding one subfolder per dataset (default: %(default)s)",
    )
    parser.add_argument(
        "--input", metavar="FILE", help="local .txt, .jsonl or .parquet file to use instead of downloading"
    )
    parser.add_argument(
        "--max-tokens",
        type=_count(0),
        default=default_value(syms["DATA_MAX_TOKENS"]),
        help="stop a .jsonl/.parquet/hub document stream after this many tokens; "
        "0: no cap (default: %(default)s)",
    )
    parser.add_argument("--workers", type=_count(1), default=None, help="CPUs to tokenize on (default: all)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        ensure_prepared(args.dataset, args.data_dir, args.input, args.max_tokens, num_workers=args.workers)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
