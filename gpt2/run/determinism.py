"""--deterministic's one line for an operation that has no deterministic
kernel.  With torch.use_deterministic_algorithms(True) (warn_only=False)
such an operation raises RuntimeError("<op> does not have a deterministic
implementation, but you set ...") wherever it runs, deep in a forward or
backward; an excepthook installed with the mode turns that, and only that,
into one `error:` line naming the operation, exit status 1."""

import re
import sys

NONDETERMINISTIC = re.compile(r"^(\S+) does not have a deterministic implementation")


def nondeterministic_operation(exc):
    """The operation an exception says has no deterministic kernel, or None."""
    match = NONDETERMINISTIC.match(str(exc)) if isinstance(exc, RuntimeError) else None
    return match[1] if match else None


def one_line(operation):
    return (f"error: --deterministic: {operation} has no deterministic kernel on this device, so this run cannot "
            "repeat bit for bit; run without --deterministic (DETERMINISTIC=n)")  # fmt: skip


def install_excepthook():
    """Print one line, not a traceback, for an uncaught RuntimeError of a
    nondeterministic operation; every other exception as before."""
    previous = sys.excepthook
    if getattr(previous, "one_line_for_nondeterministic", False):
        return  # installed already

    def hook(kind, exc, tb):
        operation = nondeterministic_operation(exc)
        if operation is None:
            return previous(kind, exc, tb)
        print(one_line(operation), file=sys.stderr, flush=True)

    hook.one_line_for_nondeterministic = True
    sys.excepthook = hook
