"""Upload offline W&B runs to the W&B server (`make wandb-sync`).

Runs trained with --wandb-offline or WANDB_MODE=offline leave folders
wandb/offline-run-<time>-<id>/ under $WANDB_DIR (default: the current
folder).  This hands them, oldest first, to `wandb sync`, which uploads each
once (it marks uploaded runs and skips them next time; a resumed run's
folders share one id and become one run).  Needs an API key: `wandb login`.
"""

import argparse
import os
import subprocess
import sys
from pathlib import Path

from lib.trackers.base import TrackerError
from lib.trackers.wandb_records import offline_run_folders
from lib.trackers.wandb_tracker import INSTALL, has_api_key, import_wandb


def default_wandb_dir():
    """Where wandb puts run folders: $WANDB_DIR/wandb, else ./wandb."""
    return Path(os.environ.get("WANDB_DIR") or ".") / "wandb"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--wandb-dir",
        type=Path,
        default=None,
        help="folder holding offline-run-* (default: $WANDB_DIR/wandb or ./wandb)",
    )
    parser.add_argument("--dry-run", action="store_true", help="list what would be uploaded, upload nothing")
    args = parser.parse_args(argv)
    wandb_dir = args.wandb_dir or default_wandb_dir()

    # Nothing to upload needs neither wandb nor a key: say so first.
    folders = offline_run_folders(wandb_dir)
    if not folders:
        print(f"wandb-sync: no offline runs in {wandb_dir}")
        return 0
    try:
        wandb = import_wandb()
    except TrackerError:  # its message speaks of the tracker; this is the sync script
        print(f"error: wandb is not installed; install it with: {INSTALL}", file=sys.stderr)
        return 1
    if not args.dry_run and not has_api_key(wandb):
        print("error: no W&B API key; run `wandb login` (or set WANDB_API_KEY) first", file=sys.stderr)
        return 1
    action = "listing" if args.dry_run else "uploading"
    print(f"wandb-sync: {action} {len(folders)} offline run folder(s) from {wandb_dir}", flush=True)
    command = [sys.executable, "-m", "wandb", "sync", *(["--dry-run"] if args.dry_run else []), *map(str, folders)]
    return subprocess.run(command, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
