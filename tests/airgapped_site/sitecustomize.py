"""The air-gapped GPU machine's Python, imitated (tests/test_airgapped.py).

Python imports `sitecustomize` at start-up from the first folder on sys.path
that holds one; PYTHONPATH puts this folder there, for the test's process
tree (gpu-check and every run it starts).  Each top-level module named in
$GPT2LAB_AIRGAP_BLOCK (comma-separated: the modules of every installed
distribution that such a machine lacks) can then be imported only from the
folders in $GPT2LAB_AIRGAP_SITE (the wheelhouse installed with --target),
else ModuleNotFoundError, as on that machine."""

import importlib.machinery
import os
import sys

BLOCKED = frozenset(filter(None, os.environ.get("GPT2LAB_AIRGAP_BLOCK", "").split(",")))
SITE = [path for path in os.environ.get("GPT2LAB_AIRGAP_SITE", "").split(os.pathsep) if path]


class AirgapFinder:
    """First on sys.meta_path: a blocked name resolves from SITE or not at all."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if path is not None or name not in BLOCKED:
            return None  # a submodule (found through its parent) or an allowed module
        spec = importlib.machinery.PathFinder.find_spec(name, SITE)
        if spec is None:
            raise ModuleNotFoundError(f"No module named '{name}' (blocked: not on the air-gapped machine)", name=name)
        return spec


if BLOCKED:
    sys.meta_path.insert(0, AirgapFinder)
