"""`make export`: a gpt2lab checkpoint as a Hugging Face folder
(gpt2/model/export.py), optionally uploaded to the Hub.

    make export                                        # out/best.pt -> EXPORT_DIR (export/)
    make export CKPT=out/ckpt.pt OUT=export/shakespeare ARGS=--overwrite
    python -m scripts.export --ckpt out/best.pt --export-dir export --export-hub-repo user/gpt2-shakespeare

--export-dir and --export-hub-repo take their defaults from the "Export" menu of
gpt2/Kconfig (EXPORT_DIR, EXPORT_HUB_REPO; a .config with --config); flags
win.  A missing or damaged checkpoint, or an --export-dir holding another model
(without --overwrite), is one `error:` line and exit status 1, and leaves
--export-dir as it was.
"""

import sys
import time

from gpt2.cli import Tool
from lib.errors import UserError


def _own_flags(parser):
    parser.add_argument("--ckpt", default="", help="checkpoint to export (default: OUT_DIR's best.pt)")
    parser.add_argument("--overwrite", action="store_true", help="replace an --export-dir that holds another model")


# Flags (gpt2/cli.py): the "Export" menu of gpt2/Kconfig (--export-dir,
# --export-hub-repo) and OUT_DIR (where the checkpoint is); defaults from
# Kconfig, or from --config's .config.
TOOL = Tool("scripts/export.py", __doc__.split("\n\n")[0], menus=("Export",), symbols=("OUT_DIR",),
            extra=_own_flags)


def build_parser(kconf=None):
    """The command line, defaults from `kconf` (the Kconfig tree, with a
    .config loaded or not)."""
    return TOOL.parser(kconf)


def parse_args(argv):
    """Flags over the defaults of --config's .config (when given) over Kconfig's."""
    args = TOOL.parse_args(argv)
    if not args.export_dir:
        raise UserError("--export-dir is empty; name the folder to write (OUT=export/ or EXPORT_DIR in .config)")
    return args


def main(argv=None):
    try:
        args = parse_args(argv)
        from gpt2.model.export import export, push_to_hub
        from gpt2.run.checkpoint_source import chosen_checkpoint

        start = time.perf_counter()
        folder, _ = export(chosen_checkpoint(args.ckpt, args.out_dir), args.export_dir, overwrite=args.overwrite)
        print(f"export took {time.perf_counter() - start:.1f} s", file=sys.stderr)
        if args.export_hub_repo:
            push_to_hub(folder, args.export_hub_repo)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
