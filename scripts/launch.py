"""Start gpt2/train.py with the generated argument set: what `make train` runs.

    python -m scripts.launch [--build-dir build] [--dry-run] [-- TRAIN_FLAGS...]

Reads build/config.py.  With NPROC_PER_NODE x NNODES > 1 training runs under
torchrun (c10d rendezvous at RDZV_ENDPOINT), otherwise in one process:

    torchrun --nproc-per-node N --nnodes M --rdzv-backend c10d \\
        --rdzv-endpoint HOST:PORT -m gpt2.train @build/train.args FLAGS...
    python -m gpt2.train @build/train.args FLAGS...

Training runs as the module gpt2.train (torchrun's -m), so nothing of gpt2/
comes first on sys.path.

Flags after `--` come after the argument set, so they win over it
(`make train ARGS="--max-iters 100"`).  This process is replaced by the
command, so its exit status is training's.
"""

import argparse
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


def command(settings, args_file, train_flags):
    """The argv that runs training for these settings."""
    train = ["-m", TRAIN_MODULE, f"@{args_file}", *train_flags]
    nproc, nnodes = settings["NPROC_PER_NODE"], settings["NNODES"]
    if nproc * nnodes == 1:
        return [sys.executable, *train]
    # `python -m torch.distributed.run` is torchrun, from this interpreter's torch.
    return [sys.executable, "-m", "torch.distributed.run",
            "--nproc-per-node", str(nproc), "--nnodes", str(nnodes),
            "--rdzv-backend", "c10d", "--rdzv-endpoint", settings["RDZV_ENDPOINT"], *train]


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    own, train_flags = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv \
        else (argv, [])
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build-dir", default="build", help="folder of config.py and train.args")
    parser.add_argument("--dry-run", action="store_true", help="print the command, run nothing")
    args = parser.parse_args(own)
    settings = read_settings(args.build_dir)
    argv_out = command(settings, Path(args.build_dir) / "train.args", train_flags)
    print(shlex.join(argv_out), flush=True)
    if not args.dry_run:
        os.execv(argv_out[0], argv_out)


if __name__ == "__main__":
    main()
