"""The config a tracked run records: every setting, plus what makes it reproducible.

Besides the train.py settings (the resolved value of every flag, and the
same as one command line, `train_args`), a run keeps the `.config` it was
built from ($KCONFIG_CONFIG, which `make` exports, else ./.config; its path
too), the git commit and whether the tree had uncommitted changes, and the
resolved project / run names.  Nothing is taken from the environment, and
anything named like a credential is redacted, so an API key can never reach
a dashboard, a journal or a config file of ours.
"""

import os
import re
import subprocess
from pathlib import Path

REDACTED = "<redacted>"
# Setting names (and .config symbols) that may hold a credential.
_SECRET_NAME = re.compile(r"api_?key|token|secret|password|passwd", re.IGNORECASE)


def run_config(settings, *, project, run_name, repo_dir="."):
    """Config dict for a run: `settings` (the train.py flags) with credentials
    redacted, the resolved names, the .config text, the git commit and state."""
    config = {key: REDACTED if _SECRET_NAME.search(key) else value for key, value in dict(settings).items()}
    config["tracker_project"] = project
    config["tracker_run_name"] = run_name
    config["dot_config_path"] = str(dot_config_path(repo_dir))
    config["dot_config"] = dot_config_text(repo_dir)
    config["git_commit"] = git_commit(repo_dir)
    config["git_dirty"] = git_dirty(repo_dir)
    return config


def dot_config_path(repo_dir="."):
    """The .config the run was generated from: $KCONFIG_CONFIG (set by make,
    relative to the folder make ran in) or .config."""
    return Path(repo_dir) / os.environ.get("KCONFIG_CONFIG", ".config")


def dot_config_text(repo_dir="."):
    """The .config the run was generated from (credential lines redacted), or None."""
    path = dot_config_path(repo_dir)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return None
    return "".join(_redact_line(line) for line in text.splitlines(keepends=True))


def _redact_line(line):
    """'CONFIG_X_TOKEN="abc"' -> 'CONFIG_X_TOKEN="<redacted>"'; other lines unchanged."""
    name, sep, _ = line.partition("=")
    if sep and _SECRET_NAME.search(name):
        return f'{name}="{REDACTED}"\n'
    return line


def _git(repo_dir, *args):
    """stdout of a git command, or None without git, outside a repository or
    before the first commit."""
    try:
        result = subprocess.run(
            ["git", "-C", str(repo_dir), *args],
            check=False,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout if result.returncode == 0 else None


def git_commit(repo_dir="."):
    """HEAD's commit hash, or None."""
    out = _git(repo_dir, "rev-parse", "--verify", "HEAD")
    return out.strip() if out else None


def git_dirty(repo_dir="."):
    """True when the working tree differs from HEAD (untracked files count:
    they may be code the run used; before the first commit everything is
    uncommitted), False when clean, None without git or a repository."""
    out = _git(repo_dir, "status", "--porcelain")
    return None if out is None else bool(out.strip())
