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

On an air-gapped machine (a wheelhouse/ of wheels from `make wheelhouse`,
this python3 already holding the site's torch, TORCH_SPEC unset) nothing is
downloaded: the venv sees the site's packages (torch included, through a .pth file), gets the
wheelhouse's wheels with `pip install --no-index`, and the project runs from
this folder instead of an editable install (which would want wandb and
datasets).  docs/airgapped.md.
"""

import importlib.util
import os
import shlex
import site
import subprocess
import sys
import venv
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
VENV = REPO_ROOT / ".venv"
STAMP = VENV / ".installed"
DEFAULT_TORCH = "torch==2.13.0"
WHEELHOUSE = REPO_ROOT / "wheelhouse"


def run(argv):
    """Run one step; stop with its exit status if it fails."""
    print("+ " + shlex.join(argv), flush=True)
    status = subprocess.call(argv)
    if status != 0:
        sys.exit(f"error: `{shlex.join(argv)}` failed (exit {status}); fix it and rerun make")


def airgapped():
    """The wheelhouse's wheels when this is an air-gapped PyTorch machine, else None."""
    wheels = sorted(WHEELHOUSE.glob("*.whl"))
    if wheels and "TORCH_SPEC" not in os.environ and importlib.util.find_spec("torch") is not None:
        return wheels
    return None


def see_site_packages(python):
    """A .pth file in the venv naming this python3's site-packages, so the
    venv imports the site's torch.  (system_site_packages would not do: the
    site's python3 is often a venv itself, and that option shows only its
    base interpreter's packages.)"""
    folder = subprocess.check_output([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                     text=True).strip()  # fmt: skip
    Path(folder, "_site_packages.pth").write_text("\n".join(site.getsitepackages()) + "\n")


def main():
    python = VENV / "bin" / "python"
    wheels = airgapped()
    if not python.exists():
        print(f"creating {VENV}" + (" on the site's packages (air-gapped: wheelhouse/)" if wheels else ""), flush=True)
        venv.create(VENV, with_pip=True)
    pip = [str(python), "-m", "pip", "install"]
    if wheels:  # no torch download, no editable install: nothing leaves this machine
        see_site_packages(python)
        run(pip + ["--no-index", "--no-deps", *map(str, wheels)])
        STAMP.touch()
        return
    run(pip + shlex.split(os.environ.get("TORCH_SPEC", DEFAULT_TORCH)))
    run(pip + ["-e", f"{REPO_ROOT}[test]"])
    STAMP.touch()


if __name__ == "__main__":
    main()
