"""Start gpt2/train.py with the generated argument set: what `make train` runs.

    python -m scripts.launch [--build-dir build] [--rdzv-endpoint HOST:PORT]
                             [--rdzv-id ID] [--dry-run] [-- TRAIN_FLAGS...]

Reads build/config.py.  With NPROC_PER_NODE x NNODES > 1 training runs under
torchrun (c10d rendezvous at RDZV_ENDPOINT, or --rdzv-endpoint for this job),
otherwise in one process:

    torchrun --nproc-per-node N --nnodes M --rdzv-backend c10d \\
        --rdzv-endpoint HOST:PORT --rdzv-id ID -m gpt2.train @build/train.args FLAGS...
    python -m gpt2.train @build/train.args FLAGS...

With several nodes, run the same command on each: every node must reach
HOST:PORT (a loopback address is refused) and use the same ID (default:
$SLURM_JOB_ID, else "gpt2lab").

Training runs as the module gpt2.train (torchrun's -m), so nothing of gpt2/
comes first on sys.path.

Flags after `--` come after the argument set, so they win over it
(`make train ARGS="--max-iters 100"`).  This process is replaced by the
command, so its exit status is training's.
"""

import argparse
import ipaddress
import os
import runpy
import shlex
import sys
from pathlib import Path

TRAIN_MODULE = "gpt2.train"


def read_settings(build_dir):
    """The constants of build/config.py as a dict."""
    path = Path(build_dir) / "config.py"
    if not path.is_file():
        sys.exit(f"error: {path} is missing; `make train` generates it from .config")
    return runpy.run_path(str(path))


def is_loopback(endpoint):
    """Whether HOST:PORT names this machine only (localhost, 127.x, ::1)."""
    host = endpoint.rsplit(":", 1)[0].strip("[]") if ":" in endpoint else endpoint
    if host.lower() in ("localhost", "localhost.localdomain", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name
        return False


def command(settings, args_file, train_flags, rdzv_id=None):
    """The argv that runs training for these settings; SystemExit with one
    line for a rendezvous no other node can reach."""
    train = ["-m", TRAIN_MODULE, f"@{args_file}", *train_flags]
    nproc, nnodes, endpoint = settings["NPROC_PER_NODE"], settings["NNODES"], settings["RDZV_ENDPOINT"]
    if nproc * nnodes == 1:
        return [sys.executable, *train]
    if nnodes > 1 and is_loopback(endpoint):
        sys.exit(f"error: RDZV_ENDPOINT {endpoint} is this machine only, but NNODES is {nnodes}: each node "
                 "would wait for itself; set RDZV_ENDPOINT to the first node's address (host:port) or pass "
                 "--rdzv-endpoint HOST:PORT")
    rdzv_id = rdzv_id or os.environ.get("SLURM_JOB_ID") or "gpt2lab"
    # `python -m torch.distributed.run` is torchrun, from this interpreter's torch.
    return [sys.executable, "-m", "torch.distributed.run",
            "--nproc-per-node", str(nproc), "--nnodes", str(nnodes),
            "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint, "--rdzv-id", rdzv_id, *train]


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    own, train_flags = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv \
        else (argv, [])
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build-dir", default="build", help="folder of config.py and train.args")
    parser.add_argument("--rdzv-endpoint", metavar="HOST:PORT",
                        help="the rendezvous of this job (default: RDZV_ENDPOINT of .config)")
    parser.add_argument("--rdzv-id", metavar="ID",
                        help="the same on every node of a job (default: $SLURM_JOB_ID, else gpt2lab)")
    parser.add_argument("--dry-run", action="store_true", help="print the command, run nothing")
    args = parser.parse_args(own)
    settings = read_settings(args.build_dir)
    if args.rdzv_endpoint:
        settings["RDZV_ENDPOINT"] = args.rdzv_endpoint
    argv_out = command(settings, Path(args.build_dir) / "train.args", train_flags, args.rdzv_id)
    print(shlex.join(argv_out), flush=True)
    if not args.dry_run:
        os.execv(argv_out[0], argv_out)


if __name__ == "__main__":
    main()
