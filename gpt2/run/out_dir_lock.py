"""One training run per --out-dir at a time.

Two runs writing one out-dir would overwrite each other's ckpt.pt and
interleave one journal.  The first run (rank 0 of it) holds an exclusive
flock() on <out-dir>/train.lock for its whole life; a second run finds it
taken and stops with one line before doing anything.  The operating system
drops the lock when the holder's file is closed, which happens at any exit,
SIGKILL and crashes included: a lock is never stale, and the file (which
only names the last holder's process id, for the message) stays behind
harmlessly.  An out-dir this run created and left empty apart from the lock
file (it stopped before writing anything) is removed again.

Where flock() does not exist (Windows) runs are not locked.  flock() is
advisory and local: it does not protect an out-dir on NFS written from two
machines.
"""

import contextlib
import os
from pathlib import Path

from gpt2.errors import UsageError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

LOCK_NAME = "train.lock"


def _holder(path):
    with contextlib.suppress(OSError, ValueError):
        return int(Path(path).read_text().strip())
    return None


class OutDirLock:
    """The lock on <out_dir>/train.lock, taken by acquire(), dropped by release()."""

    def __init__(self, out_dir):
        self.out_dir = out_dir
        self.folder = Path(out_dir)
        self.path = self.folder / LOCK_NAME
        self.fd = None
        self.created = False

    def acquire(self):
        """Take the lock (creating out_dir); UsageError if another process holds it."""
        if fcntl is None:
            return
        self.created = not self.folder.exists()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise UsageError(
                f"--out-dir {self.out_dir} cannot be written ({exc.strerror}); choose a writable folder"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = _holder(self.path)
            raise UsageError(
                f"--out-dir {self.out_dir} is in use by another training run"
                + (f" (process {holder})" if holder else "")
                + "; wait for it to end, or give this run another --out-dir"
            ) from None
        self.fd = fd
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())

    def release(self):
        if self.fd is None:
            return
        # An out-dir this run created and left empty goes again; removed while
        # still locked, so no other run can take the lock in between.
        if self.created:
            with contextlib.suppress(OSError):
                if [p.name for p in self.folder.iterdir()] == [LOCK_NAME]:
                    self.path.unlink()
                    self.folder.rmdir()
        os.close(self.fd)  # releases the lock
        self.fd = None


@contextlib.contextmanager
def out_dir_lock(out_dir, dist):
    """Hold the lock of `out_dir` for the `with` block: rank 0 takes it
    (the other ranks share its out-dir), and every rank raises its
    UsageError if it is taken (a collective, so no rank waits for one that
    stopped)."""
    lock, error = OutDirLock(out_dir), None
    if dist.is_main:
        try:
            lock.acquire()
        except UsageError as exc:
            error = str(exc)
    error = dist.gather(error)[0]
    if error:
        raise UsageError(error)
    try:
        yield lock
    finally:
        lock.release()
