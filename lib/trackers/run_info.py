"""The config a tracked run records: every setting, plus what makes it reproducible.

Besides the train.py settings (the resolved value of every flag, and the
same as one command line, `train_args`), a run keeps the `.config` it was
built from ($KCONFIG_CONFIG, which `make` exports, else ./.config; its path
too), the git commit and whether the tree had uncommitted changes, and the
resolved project / run names.  Nothing is taken from the environment, and
anything named like a credential is redacted, so an API key can never reach
a dashboard, a journal or a config file of ours.

What else a reproduction needs is one dict, config["provenance"]
(`provenance()`; gpt2/run/setup.py adds what only the run knows), read back
by scripts/experiments/reproduce.py:

  versions         {"python", "torch", "numpy", "trackio", "wandb"}: installed
                   versions (importlib.metadata, nothing imported; None: absent)
  git_diff         `git diff HEAD` when the tree is dirty, else None; cut at
                   MAX_DIFF_BYTES (git_diff_bytes: its full size, git_diff_cut:
                   whether it was cut, then a note ends the text).  Quoted
                   values of credential-named assignments are redacted
                   (git_diff_redacted: how many lines)
  untracked_files  names of untracked, not ignored files (contents not kept)
  data             the prepared data: folder, dataset, tokenizer, source,
                   source_sha256 (of the input text / download), token counts,
                   tokens_sha256 (of train.bin's and val.bin's sha256, taken
                   as they were written; None for older prepared data)
  device, dtype, compile   what ran, after the CPU fallback (may differ from
                   --device / --dtype / --compile)
  cpu_matmul       the CPU matmul library the model computed through ("blas"
                   or "onednn"; "blas" off CPU and when compiled): what
                   `--cpu-matmul auto` chose by timing
  torch_threads    torch.get_num_threads() (CPU sums may depend on it)
  world_size       the number of training processes (torchrun)
  gpu              the CUDA device's name, on CUDA only
  run_uid          a random id of this record, the same in every backend, so
                   runs sharing a name can be told apart
"""

import importlib.metadata
import os
import platform
import re
import subprocess
import uuid
from pathlib import Path

REDACTED = "<redacted>"
# Setting names (and .config symbols) that may hold a credential.  "token"
# but not "tokens" or "tokenizer": data_max_tokens is a count, not a secret.
_SECRET_WORDS = r"api_?key|token(?!s|iz)|secret|password|passwd"
_SECRET_NAME = re.compile(_SECRET_WORDS, re.IGNORECASE)
# In a diff line: a credential-named key assigned a quoted value of 8+ characters.
_SECRET_ASSIGNMENT = re.compile(
    rf"""(\w*(?:{_SECRET_WORDS})\w*["']?\s*[:=]\s*)(["'])[^"'\n]{{8,}}\2""", re.IGNORECASE
)
# The packages whose versions a run records (python's too).
PACKAGES = ("torch", "numpy", "trackio", "wandb")
# A bigger diff is cut (W&B and Trackio keep the config in one row).
MAX_DIFF_BYTES = 1 << 20


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
            errors="replace",  # a diff may hold bytes that are not UTF-8
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


def provenance(repo_dir=".", **run_facts):
    """config["provenance"] (see the module docstring): versions, the git
    diff and untracked files, a run_uid, and `run_facts` (device, dtype,
    data, ... as gpt2/run/setup.py knows them)."""
    dirty = git_dirty(repo_dir)
    diff = git_diff(repo_dir) if dirty else None
    return {
        "versions": package_versions(),
        **(diff or {"git_diff": None}),
        "untracked_files": untracked_files(repo_dir) if dirty else [],
        "run_uid": uuid.uuid4().hex,
        **run_facts,
    }


def package_versions():
    """{"python": "3.11.9", "torch": "2.13.0", ...}; None for a package not installed."""
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_diff(repo_dir=".", limit=MAX_DIFF_BYTES):
    """{"git_diff": text, "git_diff_bytes", "git_diff_cut", "git_diff_redacted"}
    of `git diff HEAD`, or None without git or a commit."""
    text = _git(repo_dir, "diff", "HEAD")
    if text is None:
        return None
    lines, redacted = [], 0
    for line in text.splitlines(keepends=True):
        clean = _SECRET_ASSIGNMENT.sub(lambda m: f"{m[1]}{m[2]}{REDACTED}{m[2]}", line)
        redacted += clean != line
        lines.append(clean)
    text = "".join(lines)
    size = len(text.encode("utf-8"))
    cut = size > limit
    if cut:
        kept = text.encode("utf-8")[:limit].decode("utf-8", errors="ignore")
        kept = kept[: kept.rfind("\n") + 1]  # whole lines only
        text = f"{kept}[gpt2lab: diff cut here: {len(kept.encode('utf-8')):,} of {size:,} bytes recorded]\n"
    return {"git_diff": text, "git_diff_bytes": size, "git_diff_cut": cut, "git_diff_redacted": redacted}


def untracked_files(repo_dir="."):
    """Names of the untracked files git does not ignore (sorted), or []."""
    out = _git(repo_dir, "ls-files", "--others", "--exclude-standard")
    return sorted(out.splitlines()) if out else []
