"""Stopping on a signal with a checkpoint, instead of dying where it stands.

Clusters announce the end of a job with a signal, then kill it a grace
period later: SLURM sends SIGTERM at preemption and time-out, or the signal
of `#SBATCH --signal=USR1@90` that many seconds before; Kubernetes sends
SIGTERM and waits terminationGracePeriodSeconds; `timeout` sends SIGTERM.
While training, gpt2/train.py catches SIGTERM, SIGUSR1 and SIGINT (Ctrl-C)
with StopSignals: the handler only notes the signal, the loop finishes the
optimizer step it is in, every rank agrees to stop at the same step, rank 0
writes a checkpoint at that step (atomic, gpt2/run/checkpoint.py), the trackers
are flushed and closed (their journal's "finish" record included), and the
process prints one line saying how to resume and exits with 128 + the
signal's number (stop_status): 143 for SIGTERM, 138 for SIGUSR1, 130 for
SIGINT.  `--resume` then continues at the next step exactly as an
uninterrupted run would.

A second signal while stopping changes nothing: the handler notes it and
returns, so the checkpoint being written is finished (and it is written to
a temporary file then renamed, so even a SIGKILL leaves the previous one
whole).  Nothing is printed from inside the handler except with os.write:
print() there could re-enter a print the main thread was in.
"""

import os
import signal
import threading

# The signals that stop a run with a checkpoint, where the platform has them
# (Windows has no SIGUSR1).
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGUSR1", "SIGINT") if hasattr(signal, name))


def signal_name(signum):
    return signal.Signals(signum).name


def stop_status(signum):
    """The exit status after a stop on `signum`: 128 + its number, what a
    shell reports for a process killed by it (143 SIGTERM, 138 SIGUSR1,
    130 SIGINT), so scripts that test for those keep working."""
    return 128 + int(signum)


class StoppedBySignal(Exception):
    """The run stopped on a signal after writing its checkpoint.  `signals`:
    the StopSignals still catching signals until the exit line is out
    (restore() them then)."""

    def __init__(self, signum, iter_num, checkpoint_path, signals=None):
        self.signum = signum
        self.status = stop_status(signum)
        self.signals = signals
        super().__init__(
            f"stopped by {signal_name(signum)} at iter {iter_num}; the checkpoint {checkpoint_path} holds that "
            f"step: add --resume to the same command to continue (exit status {self.status})"
        )


class StopSignals:
    """While active (a `with` block), STOP_SIGNALS set `received` (the first
    signal's number) instead of ending the process; on exit the previous
    handlers come back.  Outside the main thread (where Python cannot set
    handlers) it does nothing.  `announce`: write one line to stderr at the
    first and at a repeated signal (rank 0 only, so a DDP run says it once)."""

    def __init__(self, announce=True):
        self.announce = announce
        self.received = None
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, exc_type, exc, traceback):
        # After a stop the handlers stay until restore(): the process is on
        # its way out, and a signal now (torchrun sends SIGTERM to the
        # workers still running once one of them has exited) must not kill
        # it before its exit line.
        if self.received is None or exc_type is not None:
            self.restore()
        return False

    def ignore(self):
        """Ignore the stop signals from now on, through the interpreter's
        own shutdown too (which would reset a Python handler to the default)."""
        for signum in self._previous:
            signal.signal(signum, signal.SIG_IGN)

    def restore(self):
        """Put the handlers from before __enter__ back."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _handle(self, signum, frame):
        if self.received is None:
            self.received = signum
            note = "finishing this step, then writing a checkpoint and stopping"
        else:
            note = "already stopping; the checkpoint is being written, wait for the exit"
        if self.announce:
            os.write(2, f"{signal_name(signum)} received: {note}\n".encode())
