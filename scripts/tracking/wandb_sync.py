"""Upload offline W&B runs to the W&B server (`make wandb-sync`).

Runs trained with --wandb-offline or WANDB_MODE=offline leave folders
wandb/offline-run-<time>-<id>/ under $WANDB_DIR (default: the current
folder); a resumed run leaves one per session, all with the run's id.  This
hands every folder, oldest first, to one `wandb sync` call.  In the wandb
pinned here (0.31: `wandb sync` is wandb-core's sync, the former one needs
wandb<=0.29 and `--legacy`), wandb sync collects the .wandb files, and
"when syncing multiple files that are part of the same run, the files are
synced sequentially in order of start time" (its --help): the sessions of a
resumed run go into one run, one after another.  Each file synced gets a
.wandb.synced marker and is skipped by later calls, so running this again
(say after another resumed session) uploads only the new sessions instead
of duplicating the run.  Needs an API key: `wandb login`.
"""

import argparse
import os
import subprocess
import sys
from pathlib import Path

from lib.trackers.base import TrackerError
from lib.trackers.wandb_records import _run_folder, offline_run_folders
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
    for run_id, sessions in sessions_by_run(folders).items():
        if len(sessions) > 1:
            print(f"wandb-sync: run {run_id}: {len(sessions)} sessions (resumed), synced in this order into "
                  f"that one run: {', '.join(folder.name for folder in sessions)}", flush=True)
    command = sync_command(folders, args.dry_run)
    print(f"wandb-sync: {' '.join(command[1:])}", flush=True)
    return subprocess.run(command, check=False).returncode


def sessions_by_run(folders):
    """{run id: its folders, oldest first} of offline-run-<time>-<id> folders."""
    runs = {}
    for folder in folders:
        runs.setdefault(_run_folder(folder)[2], []).append(folder)  # (time, n, id) of the name
    return runs


def sync_command(folders, dry_run=False):
    """The one `wandb sync` call for `folders` (oldest first)."""
    return [sys.executable, "-m", "wandb", "sync", *(["--dry-run"] if dry_run else []), *map(str, folders)]


if __name__ == "__main__":
    sys.exit(main())
