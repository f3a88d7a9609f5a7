"""Automatic project and run names, shared by train.py, the Makefile and the scripts.

One function per name so that `make trackio-show`, `make wandb-sync`,
scripts/tracking/replay_journal.py and gpt2/train.py always agree on where a run lives.
"""

import datetime
import hashlib
import os
import re
from pathlib import Path

# Trackio keeps only letters, digits, '-' and '_' of a project name on disk
# (my.model and mymodel share one database); replacing everything else here
# makes the name we print the name Trackio stores.
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def default_project_name(path=None):
    """Project name of a working directory: '<folder>-<md5(abs path)[:8]>'.

    Two checkouts called gpt2lab get different projects, and the same
    checkout always gets the same one (e.g. 'gpt2lab-a1d53c54').
    """
    folder = Path(path if path is not None else os.getcwd()).resolve()
    digest = hashlib.md5(str(folder).encode("utf-8")).hexdigest()[:8]
    base = _UNSAFE.sub("-", folder.name).strip("-") or "gpt2lab"
    return f"{base}-{digest}"


def model_label(config):
    """The --model preset ('gpt2', 'gpt2-medium', ...), or for --model custom
    the shape it has: 'gpt2-<n_layer>l<n_embd>d' (e.g. 'gpt2-4l128d')."""
    model = str(config.get("model") or "gpt2")
    if model != "custom":
        return model
    return f"gpt2-{config.get('n_layer')}l{config.get('n_embd')}d"


def default_run_name(config, now=None):
    """Readable, unique run name: '<model>_<optimizer>_<YYYYmmdd-HHMMSS>'.

    e.g. 'gpt2_adamwspam_20261125-141503' or 'gpt2-4l128d_adamw_20261125-141503'.
    `config` is the dict of train.py settings; `now` a datetime (default: now).
    """
    now = now or datetime.datetime.now()
    optimizer = str(config.get("optimizer") or "opt")
    name = f"{model_label(config)}_{optimizer}_{now:%Y%m%d-%H%M%S}"
    return _UNSAFE.sub("-", name)


if __name__ == "__main__":
    # `python -m lib.trackers.naming` prints this checkout's project name,
    # for shell use such as `trackio show --project "$(python -m lib.trackers.naming)"`.
    print(default_project_name())
