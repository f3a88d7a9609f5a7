"""Files that are replaced whole or not at all: the one way gpt2lab writes
.config, build/, checkpoints, metrics and prepared data.

A writer fills a temporary file beside the target (the same folder, so the
same file system), flushes and fsyncs it, then os.replace()s it over the
target, which is atomic on POSIX and Windows: a reader, or a process killed
at any moment, finds the old bytes or all of the new ones, never a part.  An
exception in the `with` block removes the temporary and leaves the target as
it was.  Last, the folder is fsynced so that the rename itself survives a
power cut, where the OS allows.

The temporary is `.<name>.<pid>.tmp`: hidden, never shared by two processes
writing the same target (the last replace wins, each one whole), and made by
open() rather than mkstemp(), so it gets the usual permissions from the umask
instead of 0600.  A writer killed hard (SIGKILL, power loss) leaves its
temporary behind; remove_stale_temporaries() clears those of processes gone.

A folder is replaced whole the same way (atomic_folder): filled beside it
as `.<name>.<host>.<pid>.tmp`, then swapped in by one rename, so a reader
or a kill -9 finds the old folder or the complete new one.
"""

import contextlib
import ctypes
import errno
import glob
import os
import shutil
import socket
import sys
from pathlib import Path

__all__ = [
    "atomic_folder",
    "atomic_open",
    "fsync_folder",
    "publish_as",
    "remove_stale_folders",
    "remove_stale_temporaries",
    "replaced_atomically",
    "temporary_path",
    "write_bytes_atomically",
    "write_text_atomically",
]


def temporary_path(path):
    """Where this process writes the next content of `path`."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def fsync_folder(folder):
    """Make a rename in `folder` durable (the folder entry itself), where the
    OS allows: Windows cannot open a folder and some file systems cannot
    fsync one; the rename has happened either way."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def _replacing(path):
    """Yield the temporary path of `path`; when the block completes, rename
    it over `path` and fsync the folder; on any exception remove it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):  # the original error matters, not this one
            os.unlink(tmp)
        raise
    fsync_folder(path.parent)


@contextlib.contextmanager
def atomic_open(path, mode="wb", encoding=None):
    """Yield a file open for writing ("wb", or "w": UTF-8 text unless
    `encoding` says otherwise) that replaces `path` only once the `with`
    block completes."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes a whole new file: mode 'w' or 'wb', not {mode!r}")
    if mode == "w" and encoding is None:
        encoding = "utf-8"
    with _replacing(path) as tmp:
        with open(tmp, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())


@contextlib.contextmanager
def replaced_atomically(path):
    """Yield a temporary path beside `path` for code that writes to a file
    name rather than a file object (kconfiglib's write_config); once the
    block completes, what was written there is fsynced and replaces `path`."""
    with _replacing(path) as tmp:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)  # fsync needs no write access on POSIX
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_bytes_atomically(path, data):
    """Replace `path` with `data` (bytes) in one step."""
    with atomic_open(path, "wb") as f:
        f.write(data)


def write_text_atomically(path, text, encoding="utf-8"):
    """Replace `path` with `text` in one step."""
    with atomic_open(path, "w", encoding=encoding) as f:
        f.write(text)


def publish_as(source, target):
    """Atomically make `target` hold the bytes of `source`, a finished file
    that is only ever replaced, never rewritten in place.  A hard link costs
    nothing (and when `source` is later replaced, `target` keeps these
    bytes); file systems without links get a copy."""
    with _replacing(target) as tmp:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)  # left by a killed process that had this pid
        try:
            os.link(source, tmp)
        except OSError:
            with open(source, "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst)
                dst.flush()
                os.fsync(dst.fileno())


def _is_running(pid):
    if os.name == "nt":  # os.kill would terminate it; assume it still runs
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it runs, as another user
        return True
    return True


def remove_stale_temporaries(path):
    """Remove the temporaries of `path` whose writer no longer runs on this
    machine (killed before it could clean up); returns their paths.  For a
    target that only processes of this machine write."""
    path = Path(path)
    prefix = f".{path.name}."
    removed = []
    for tmp in path.parent.glob(glob.escape(prefix) + "*.tmp"):
        pid = tmp.name[len(prefix):-len(".tmp")]
        if pid.isdigit() and int(pid) != os.getpid() and not _is_running(int(pid)):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                removed.append(tmp)
    return removed


# ----------------------------------------------------------------------------
# Folders


def _folder_temporary(path, kind="tmp"):
    """`.<name>.<host>.<pid>.<kind>` beside `path`: the host too, since a
    --data-dir may be shared by several machines whose pids are unrelated."""
    return path.with_name(f".{path.name}.{socket.gethostname()}.{os.getpid()}.{kind}")


RENAME_EXCHANGE = 2  # linux/fs.h
AT_FDCWD = -100


def _exchange(a, b):
    """Swap the two paths in one step (Linux's renameat2 RENAME_EXCHANGE);
    False where the OS, the C library or the file system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # glibc before 2.28, musl
        return False
    if renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):  # e.g. NFS
        return False
    raise OSError(error, os.strerror(error), str(b))


def _swap_in(tmp, path):
    """Put the finished folder `tmp` at `path`, then delete what was there."""
    try:
        os.rename(tmp, path)  # no folder there yet: one rename
        return
    except OSError as exc:
        if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
            raise
    if _exchange(tmp, path):
        shutil.rmtree(tmp, ignore_errors=True)  # now the old folder
        return
    # Two renames: a kill between them leaves the old folder as `.old`, which
    # remove_stale_folders() puts back.
    old = _folder_temporary(path, "old")
    os.rename(path, old)
    os.rename(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_folder(path):
    """Yield a new empty folder beside `path` that, once the `with` block
    completes, takes the place of the folder `path` with all it holds; on
    any exception it is removed and `path` is left as it was.  Killed hard,
    the writer leaves it behind for remove_stale_folders()."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _folder_temporary(path)
    shutil.rmtree(tmp, ignore_errors=True)  # left by a killed process that had this pid
    tmp.mkdir()
    try:
        yield tmp
        for entry in tmp.iterdir():  # the files' bytes on disk before the folder is swapped in
            if entry.is_file():
                with open(entry, "rb") as f:
                    os.fsync(f.fileno())
        fsync_folder(tmp)
        _swap_in(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_folder(path.parent)


def remove_stale_folders(path):
    """Clear what atomic_folder writers on this machine that no longer run
    left beside `path`: an unfinished folder is removed; the old folder of
    an interrupted swap is put back if `path` is missing, else removed.
    Returns the paths removed or restored."""
    path = Path(path)
    prefix = f".{path.name}.{socket.gethostname()}."
    done = []
    for entry in sorted(path.parent.glob(glob.escape(prefix) + "*")):
        pid, _, kind = entry.name[len(prefix):].partition(".")
        if kind not in ("tmp", "old") or not pid.isdigit() or int(pid) == os.getpid() or _is_running(int(pid)):
            continue
        if kind == "old" and not path.exists():
            os.rename(entry, path)
        else:
            shutil.rmtree(entry, ignore_errors=True)
        done.append(entry)
    return done
