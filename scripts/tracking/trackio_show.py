"""Open the Trackio dashboard of this checkout's project: `make trackio-show`.

Runs `trackio show --project <project>` with the project of build/config.py
(TRACKER_PROJECT, or the automatic '<folder>-<checksum>' name train.py uses),
GRADIO_SERVER_PORT from --port (`make trackio-show PORT=8080`) or
TRACKIO_PORT, and TRACKIO_DIR from the configuration when it is set.
"""

import argparse
import importlib.util
import os
import sys

from lib.trackers.naming import default_project_name
from lib.trackers.trackio_tracker import INSTALL, database_dir
from scripts.launch import read_settings


def port_number(text):
    """A TCP port, or None for an empty --port (use TRACKIO_PORT)."""
    if not text:
        return None
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (1-65535)")
    return int(text)


def dashboard(settings, port=None):
    """(argv, environment) that serve the dashboard."""
    project = settings["TRACKER_PROJECT"] or default_project_name()
    env = dict(os.environ, GRADIO_SERVER_PORT=str(port or settings["TRACKIO_PORT"]))
    if settings["TRACKIO_DIR"]:
        env["TRACKIO_DIR"] = str(database_dir(settings["TRACKIO_DIR"]))  # as train.py resolves it
    return [sys.executable, "-m", "trackio.cli", "show", "--project", project], env


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--build-dir", default="build", help="folder of config.py")
    parser.add_argument("--port", type=port_number, default=None,
                        help="dashboard port (default: TRACKIO_PORT of the configuration)")
    parser.add_argument("--dry-run", action="store_true", help="print the command, run nothing")
    args = parser.parse_args(argv)
    if importlib.util.find_spec("trackio") is None:
        sys.exit(f"error: Trackio is not installed; install it with: {INSTALL}")
    argv_out, env = dashboard(read_settings(args.build_dir), args.port)
    print(f"GRADIO_SERVER_PORT={env['GRADIO_SERVER_PORT']} trackio show --project {argv_out[-1]}",
          flush=True)
    if not args.dry_run:
        os.execve(argv_out[0], argv_out, env)


if __name__ == "__main__":
    main()
