"""The environment of an air-gapped GPU node, imitated in this venv: the
top-level modules to block (tests/airgapped_site/sitecustomize.py blocks
them) so that only what such a machine has can be imported: the site's
PyTorch and its scientific stack (with everything they require), gpt2lab
itself, and the wheelhouse (scripts/wheelhouse.py's WHEELS)."""

import importlib.metadata
import os
import re
from pathlib import Path

from packaging.requirements import Requirement

REPO_ROOT = Path(__file__).resolve().parent.parent
SITECUSTOMIZE_DIR = Path(__file__).resolve().parent / "airgapped_site"
# The list of what the GPU machine has besides torch.
SITE = ["torch", "numpy", "jinja2", "tiktoken", "pyarrow", "transformers", "safetensors", "huggingface-hub",
        "matplotlib", "tqdm", "pytest"]  # fmt: skip


def normalized(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def with_requirements(names):
    """`names` and every distribution they require here, recursively."""
    seen, todo = set(), list(names)
    while todo:
        name = normalized(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for line in requires:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return seen


def blocked_modules(allowed):
    """Top-level modules no distribution in `allowed` provides."""
    allowed = {normalized(n) for n in allowed}
    return sorted(module for module, dists in importlib.metadata.packages_distributions().items()
                  if not any(normalized(d) in allowed for d in dists))  # fmt: skip


def airgapped_env(allowed, site_dirs=()):
    """os.environ for a process tree that can import only `allowed`
    distributions (and what the folders `site_dirs` hold)."""
    pythonpath = [str(SITECUSTOMIZE_DIR), *map(str, site_dirs)]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(pythonpath),
                GPT2LAB_AIRGAP_BLOCK=",".join(blocked_modules(allowed)),
                GPT2LAB_AIRGAP_SITE=os.pathsep.join(map(str, site_dirs)))  # fmt: skip
