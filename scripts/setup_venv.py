"""Create .venv and install gpt2lab into it (stdlib only; run with python3).

Named setup_venv.py, not venv.py: scripts/ is sys.path[0] when this runs,
and a venv.py here would shadow the standard library module it uses.

`make` runs this before any target that needs the project's packages, and
again when pyproject.toml changes:

  1. python3 -m venv .venv                (when .venv/bin/python is missing)
  2. pip install torch==2.13.0            (TORCH_SPEC overrides it, e.g. a CUDA
                                           build: TORCH_SPEC="torch==2.13.0
                                           --index-url https://download.pytorch.org/whl/cu126")
  3. pip install -e .[test]
  4. touch .venv/.installed                (the stamp make checks)
"""

import os
import shlex
import subprocess
import sys
import venv
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
VENV = REPO_ROOT / ".venv"
STAMP = VENV / ".installed"
DEFAULT_TORCH = "torch==2.13.0"


def run(argv):
    """Run one step; stop with its exit status if it fails."""
    print("+ " + shlex.join(argv), flush=True)
    status = subprocess.call(argv)
    if status != 0:
        sys.exit(f"error: `{shlex.join(argv)}` failed (exit {status}); fix it and rerun make")


def main():
    python = VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {VENV}", flush=True)
        venv.create(VENV, with_pip=True)
    pip = [str(python), "-m", "pip", "install"]
    run(pip + shlex.split(os.environ.get("TORCH_SPEC", DEFAULT_TORCH)))
    run(pip + ["-e", f"{REPO_ROOT}[test]"])
    STAMP.touch()


if __name__ == "__main__":
    main()
