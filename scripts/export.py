"""`make export`: a gpt2lab checkpoint as a Hugging Face folder
(gpt2/model/export.py), optionally uploaded to the Hub.

    make export                                        # out/best.pt -> EXPORT_DIR (export/)
    make export CKPT=out/ckpt.pt OUT=export/shakespeare ARGS=--overwrite
    python -m scripts.export --ckpt out/best.pt --out export --push-to-hub user/gpt2-shakespeare

--out and --push-to-hub take their defaults from the "Export" menu of
gpt2/Kconfig (EXPORT_DIR, EXPORT_HUB_REPO; a .config with --config); flags
win.  A missing or damaged checkpoint, or an --out holding another model
(without --overwrite), is one `error:` line and exit status 1, and leaves
--out as it was.
"""

import argparse
import sys
import time
from pathlib import Path

from lib.errors import UserError
from lib.kconfig import ConfigError, load_tree, read_config
from lib.options import options

DEFAULT_CHECKPOINT = "out/best.pt"
FLAGS = {"EXPORT_DIR": "--out", "EXPORT_HUB_REPO": "--push-to-hub"}


def build_parser(kconf):
    parser = argparse.ArgumentParser(prog="scripts/export.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=None, help="a .config whose Export options are the defaults")
    parser.add_argument("--ckpt", default=DEFAULT_CHECKPOINT, help="checkpoint to export (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="replace an --out that holds another model")
    by_name = {option.name: option for option in options(kconf)}
    for name, flag in FLAGS.items():
        option = by_name[name]
        parser.add_argument(flag, default=option.value(kconf),
                            help=f"{option.prompt.replace('%', '%%')} [Kconfig {name}] (default: %(default)r)")
    return parser


def parse_args(argv):
    """Flags over the defaults of --config's .config (when given) over Kconfig's."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, _ = pre.parse_known_args(argv)
    try:
        kconf = read_config(known.config) if known.config and Path(known.config).is_file() else load_tree()
    except ConfigError as err:
        raise UserError(str(err)) from None
    args = build_parser(kconf).parse_args(argv)
    args.ckpt = args.ckpt or DEFAULT_CHECKPOINT
    if not args.out:
        raise UserError("--out is empty; name the folder to write (OUT=export/ or EXPORT_DIR in .config)")
    return args


def main(argv=None):
    try:
        args = parse_args(argv)
        from gpt2.model.export import export, push_to_hub

        start = time.perf_counter()
        folder, _ = export(args.ckpt, args.out, overwrite=args.overwrite)
        print(f"export took {time.perf_counter() - start:.1f} s", file=sys.stderr)
        if args.push_to_hub:
            push_to_hub(folder, args.push_to_hub)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
