"""lib/atomic.py: a target is replaced whole or not at all, its temporary is
never shared with another process, and nothing is left behind."""

import os
import stat
import subprocess
import sys

import pytest

import lib.atomic
from lib.atomic import (
    atomic_folder,
    atomic_open,
    publish_as,
    remove_stale_folders,
    remove_stale_temporaries,
    replaced_atomically,
    temporary_path,
    write_bytes_atomically,
    write_text_atomically,
)


def names(folder):
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture
def umask():
    """Set the process umask for one test, then restore it."""
    old = os.umask(0o022)
    os.umask(old)
    yield os.umask
    os.umask(old)


def dead_pid():
    """The id of a process that has exited."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.mark.parametrize("mode", ["wb", "w"])
def test_the_target_is_untouched_when_the_block_raises(tmp_path, mode):
    target = tmp_path / "ckpt.pt"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="killed mid-write"):
        with atomic_open(target, mode) as f:
            f.write(b"half of the new" if mode == "wb" else "half of the new")
            raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"old"
    assert names(tmp_path) == ["ckpt.pt"]


def test_a_path_writer_that_fails_leaves_the_target_and_no_temporary(tmp_path):
    target = tmp_path / ".config"
    target.write_text("CONFIG_OLD=y\n")
    with pytest.raises(OSError):
        with replaced_atomically(target) as tmp:
            tmp.write_text("CONFIG_NEW=")
            raise OSError("disk full")
    assert target.read_text() == "CONFIG_OLD=y\n"
    assert names(tmp_path) == [".config"]


def test_a_failed_rename_removes_the_temporary(tmp_path):
    target = tmp_path / "build"
    target.mkdir()
    (target / "keep").write_text("x")  # a non-empty folder cannot be replaced by a file
    with pytest.raises(OSError):
        write_text_atomically(target, "text")
    assert names(tmp_path) == ["build"]


def test_the_target_is_replaced_in_full_on_success(tmp_path):
    target = tmp_path / "sub" / "train.args"  # missing folders are made
    write_text_atomically(target, "old\n" * 1000)
    write_text_atomically(target, '"--max-iters=7"\n')
    assert target.read_text() == '"--max-iters=7"\n'
    write_bytes_atomically(target, b"\x00\x01" * 3)
    assert target.read_bytes() == b"\x00\x01" * 3
    with atomic_open(target, "w") as f:
        f.write("é\n")
    assert target.read_bytes() == "é\n".encode("utf-8")
    with replaced_atomically(target) as tmp:
        assert tmp.parent == target.parent
        tmp.write_text("written by name\n")
    assert target.read_text() == "written by name\n"
    assert names(target.parent) == ["train.args"]


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_permissions_follow_the_umask(tmp_path, umask, mask, expected):
    umask(mask)
    write_text_atomically(tmp_path / "config.py", "X = 1\n")
    with replaced_atomically(tmp_path / ".config") as tmp:
        tmp.write_text("CONFIG_X=1\n")
    for name in ("config.py", ".config"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == expected, name


def test_two_writers_of_one_target_do_not_share_a_temporary(tmp_path):
    """Another process replaces the target while this one is mid-write: each
    writes its own temporary, so both succeed and the last one wins whole."""
    target = tmp_path / "ckpt.pt"
    other = ("import sys; from lib.atomic import temporary_path, write_text_atomically; "
             "print(temporary_path(sys.argv[1])); write_text_atomically(sys.argv[1], 'other')")
    with atomic_open(target, "w") as f:
        f.write("mine, ")
        result = subprocess.run([sys.executable, "-c", other, str(target)],
                                capture_output=True, text=True, check=True)
        assert target.read_text() == "other"
        f.write("all of it")
    assert result.stdout.strip() != str(temporary_path(target))
    assert target.read_text() == "mine, all of it"
    assert names(tmp_path) == ["ckpt.pt"]


@pytest.mark.parametrize("links", [True, False])
def test_publish_as_keeps_its_bytes_when_the_source_moves_on(tmp_path, monkeypatch, links):
    if not links:
        def no_link(*args):
            raise OSError("no hard links here")
        monkeypatch.setattr(os, "link", no_link)
    source, target = tmp_path / "ckpt.pt", tmp_path / "best.pt"
    write_bytes_atomically(source, b"step 1")
    write_bytes_atomically(target, b"step 0")
    publish_as(source, target)
    write_bytes_atomically(source, b"step 2")
    assert target.read_bytes() == b"step 1" and source.read_bytes() == b"step 2"
    assert names(tmp_path) == ["best.pt", "ckpt.pt"]


def test_publish_as_a_missing_source_leaves_the_target(tmp_path):
    target = tmp_path / "best.pt"
    target.write_bytes(b"old")
    with pytest.raises(FileNotFoundError):
        publish_as(tmp_path / "ckpt.pt", target)
    assert names(tmp_path) == ["best.pt"]


def test_stale_temporaries_of_exited_writers_are_removed(tmp_path):
    target = tmp_path / "ckpt.pt"
    dead = tmp_path / f".ckpt.pt.{dead_pid()}.tmp"
    running = tmp_path / f".ckpt.pt.{os.getppid()}.tmp"
    for path in (dead, running, temporary_path(target), tmp_path / ".best.pt.1.tmp"):
        path.write_bytes(b"half")
    assert remove_stale_temporaries(target) == [dead]
    assert names(tmp_path) == sorted([running.name, temporary_path(target).name, ".best.pt.1.tmp"])


@pytest.mark.parametrize("mode", ["a", "r+b", "x"])
def test_atomic_open_only_writes_whole_files(tmp_path, mode):
    with pytest.raises(ValueError, match="mode 'w' or 'wb'"):
        with atomic_open(tmp_path / "f", mode):
            pass


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two renames"])
def test_a_folder_is_replaced_whole(tmp_path, monkeypatch, exchange):
    if not exchange:  # a file system without RENAME_EXCHANGE (NFS), or not Linux
        monkeypatch.setattr(lib.atomic, "_exchange", lambda a, b: False)
    target = tmp_path / "data"
    target.mkdir()
    (target / "old.bin").write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_folder(target) as work:
            (work / "new.bin").write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert names(tmp_path) == ["data"] and names(target) == ["old.bin"]
    with atomic_folder(target) as work:
        (work / "new.bin").write_bytes(b"new")
        assert names(target) == ["old.bin"]  # untouched until the block completes
    assert names(tmp_path) == ["data"] and names(target) == ["new.bin"]


def test_stale_folders_are_removed_and_an_interrupted_swap_is_undone(tmp_path):
    import socket

    host = socket.gethostname()
    target = tmp_path / "data"
    unfinished = tmp_path / f".data.{host}.{dead_pid()}.tmp"
    old = tmp_path / f".data.{host}.{dead_pid()}.old"  # killed between the two renames
    other_host = tmp_path / ".data.elsewhere.1.tmp"  # another machine's writer: not ours to judge
    for folder in (unfinished, old, other_host):
        folder.mkdir()
        (folder / "x.bin").write_bytes(b"x")
    assert sorted(remove_stale_folders(target)) == sorted([unfinished, old])
    assert names(tmp_path) == [".data.elsewhere.1.tmp", "data"] and names(target) == ["x.bin"]
