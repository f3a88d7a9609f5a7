"""Tests and tools find Tiny Shakespeare without ../shared
(gpt2/data/sources.find_shakespeare): $GPT2LAB_SHAKESPEARE, then what `make
train` downloaded, then CI's ../shared copy, else one download; offline, one
line saying where to put the file.  No test here touches the network: the
download reads a file:// URL."""

import urllib.error
import urllib.request

import pytest

from gpt2.data.sources import SHAKESPEARE_ENV, DataError, find_shakespeare


@pytest.fixture
def clone(tmp_path, monkeypatch):
    """A repository folder with nothing in data/ and no ../shared beside it."""
    monkeypatch.delenv(SHAKESPEARE_ENV, raising=False)
    root = tmp_path / "work" / "gpt2lab"
    root.mkdir(parents=True)
    return root


def put(path, text="corpus\n"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_order_env_then_downloaded_then_shared(clone, tmp_path, monkeypatch):
    shared = put(clone.parent / "shared" / "data" / "tinyshakespeare" / "input.txt")
    assert find_shakespeare(clone) == shared
    downloaded = put(clone / "data" / "shakespeare" / "input.txt")
    assert find_shakespeare(clone) == downloaded
    named = put(tmp_path / "elsewhere.txt")
    monkeypatch.setenv(SHAKESPEARE_ENV, str(named))
    assert find_shakespeare(clone) == named


def test_env_naming_a_missing_file_is_one_line(clone, tmp_path, monkeypatch):
    monkeypatch.setenv(SHAKESPEARE_ENV, str(tmp_path / "missing.txt"))
    with pytest.raises(DataError, match=f"^{SHAKESPEARE_ENV}=.*missing.txt: no such file") as err:
        find_shakespeare(clone)
    assert "\n" not in str(err.value)


def test_nothing_anywhere_downloads_once_to_where_make_train_looks(clone, tmp_path, shakespeare_path):
    url = shakespeare_path.as_uri()
    path = find_shakespeare(clone, url=url)
    assert path == clone / "data" / "shakespeare" / "input.txt"
    assert path.read_bytes() == shakespeare_path.read_bytes()
    assert find_shakespeare(clone, url=(tmp_path / "gone.txt").as_uri()) == path  # found, not fetched again


def test_offline_says_where_to_put_the_file(clone, monkeypatch):
    def no_network(url, timeout):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    with pytest.raises(DataError) as err:
        find_shakespeare(clone)
    message = str(err.value)
    assert "\n" not in message and message.startswith("cannot download")
    assert f"put Tiny Shakespeare's input.txt at {clone}/data/shakespeare/input.txt" in message
    assert not (clone / "data" / "shakespeare" / "input.txt").exists()


def test_make_train_offline_names_the_datasets_folder(tmp_path, monkeypatch):
    """What a fresh clone with no corpus and no network prints: the folder
    `make train` reads (not the sibling one a preparation fills)."""
    from gpt2.data.prepare import ensure_prepared

    def no_network(url, timeout):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    with pytest.raises(DataError) as err:
        ensure_prepared("shakespeare", tmp_path / "data", log=lambda *a: None)
    message = str(err.value)
    assert "\n" not in message
    assert f"offline, put the file at {tmp_path}/data/shakespeare/input.txt, or set DATA_INPUT" in message
    assert not (tmp_path / "data").exists()
