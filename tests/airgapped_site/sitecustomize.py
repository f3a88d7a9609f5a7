"""The air-gapped GPU machine's Python, imitated (tests/test_airgapped.py).

Python imports `sitecustomize` at start-up from the first folder on sys.path
that holds one; PYTHONPATH puts this folder there, for the test's process
tree (gpu-check and every run it starts).  Each top-level module named in
$GPT2LAB_AIRGAP_BLOCK (comma-separated: the modules of every installed
distribution that such a machine lacks) can then be imported only from the
folders in $GPT2LAB_AIRGAP_SITE (the wheelhouse installed with --target),
else they are not found (ModuleNotFoundError), as on that machine."""

import importlib.machinery
import os
import sys

BLOCKED = frozenset(filter(None, os.environ.get("GPT2LAB_AIRGAP_BLOCK", "").split(",")))
SITE = [path for path in os.environ.get("GPT2LAB_AIRGAP_SITE", "").split(os.pathsep) if path]


class AirgapPathFinder(importlib.machinery.PathFinder):
    """sys.meta_path's PathFinder, except that a blocked top-level name is
    looked for in SITE only: not found, find_spec() is None and import
    raises ModuleNotFoundError, as on that machine."""

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if path is None and name in BLOCKED:
            return super().find_spec(name, SITE, target)
        return super().find_spec(name, path, target)


if BLOCKED:
    sys.meta_path[:] = [AirgapPathFinder if f is importlib.machinery.PathFinder else f for f in sys.meta_path]
