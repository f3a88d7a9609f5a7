"""Shared pytest fixtures: the local Tiny Shakespeare corpus, its prepared
token files, and an environment that keeps every test offline and out of the
user's home directory."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from gpt2.data.sources import DataError, find_shakespeare

REPO_ROOT = Path(__file__).resolve().parent.parent

# Flags that make Hugging Face and W&B stay off the network.
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "WANDB_MODE": "offline",
    "WANDB_SILENT": "true",
}
# Folders that libraries would otherwise create under ~ (HF_HOME holds the
# datasets cache and, unless TRACKIO_DIR is set, Trackio's database).
SCRATCH_DIR_VARS = (
    "TRACKIO_DIR",
    "WANDB_DIR",
    "WANDB_CONFIG_DIR",
    "WANDB_CACHE_DIR",
    "WANDB_DATA_DIR",
    "HF_HOME",
)

_session_scratch = None


def _point_at_scratch(setenv, root):
    for name, value in OFFLINE_ENV.items():
        setenv(name, value)
    for name in SCRATCH_DIR_VARS:
        folder = Path(root) / name.lower()
        folder.mkdir(parents=True, exist_ok=True)
        setenv(name, str(folder))


def pytest_configure(config):
    """Set the environment before test modules are imported: trackio and
    huggingface_hub read TRACKIO_DIR / HF_HOME once, at import time."""
    global _session_scratch
    _session_scratch = tempfile.mkdtemp(prefix="gpt2lab-tests-")
    _point_at_scratch(os.environ.__setitem__, _session_scratch)
    # gpt2/cpu/machine_profile.py's cache: one per session, not ~/.cache, and not
    # one per test (each would measure the CPU again, about a second).
    os.environ["XDG_CACHE_HOME"] = os.path.join(_session_scratch, "xdg_cache")


def pytest_unconfigure(config):
    if _session_scratch:
        shutil.rmtree(_session_scratch, ignore_errors=True)


@pytest.fixture(autouse=True)
def offline_env(monkeypatch, tmp_path_factory):
    """Give each test (and the subprocesses it starts) fresh tracker and
    cache folders, so runs of different tests never see each other."""
    _point_at_scratch(monkeypatch.setenv, tmp_path_factory.mktemp("env"))


@pytest.fixture(autouse=True)
def no_shared_wandb_service():
    """An in-process wandb run exports WANDB_SERVICE (its wandb-core's
    address) for child processes; drop it after each test so that later
    tests' subprocesses start their own wandb-core (see tracking_support.own_env)."""
    yield
    os.environ.pop("WANDB_SERVICE", None)


@pytest.fixture(scope="session")
def shakespeare_path():
    """Path of the Tiny Shakespeare text (1,115,394 characters):
    $GPT2LAB_SHAKESPEARE, data/shakespeare/input.txt, ../shared (CI), else
    downloaded once into data/shakespeare/ (gpt2/data/sources.py)."""
    try:
        return find_shakespeare(REPO_ROOT)
    except DataError as err:
        pytest.fail(f"error: {err}", pytrace=False)


@pytest.fixture(scope="session")
def shakespeare_data(tmp_path_factory, shakespeare_path):
    """A data dir holding shakespeare/{train,val}.bin + meta.json, prepared
    once per session from the local corpus.  Use it as
    `python gpt2/train.py --data-dir <it> --dataset shakespeare`."""
    from gpt2.data.prepare import ensure_prepared

    data_dir = tmp_path_factory.mktemp("data")
    ensure_prepared("shakespeare", data_dir, input_path=shakespeare_path)
    return data_dir
