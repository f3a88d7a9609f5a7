"""The one base class of the errors a user can cause, and the one place an
entry point turns them into its `error: ...` line.

A UserError's message is one line saying what is wrong and how to fix it;
each part raises its own subclass (ConfigError, TrackerError, DataError,
UsageError, ...) so callers that care can tell them apart, and every entry
point catches the base class once, in `user_errors()`, instead of listing
the subclasses it happens to know.
"""

import sys
from contextlib import contextmanager


class UserError(Exception):
    """Something the user can fix; str() is one line saying what and how."""


class ExitStatus(Exception):
    """Raised by user_errors() to end the entry point with this status."""

    def __init__(self, status):
        super().__init__(status)
        self.status = status


def one_line(text):
    """Collapse whitespace so a message always fits on one line."""
    return " ".join(str(text).split())


def first_line(exc):
    """The first line of an exception's message, or its type's name when it
    has none: a third-party error, shown in one line of ours."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def report(error, prefix="error"):
    """Print `error` as the one line a user sees, on stderr."""
    print(f"{prefix}: {one_line(error)}", file=sys.stderr, flush=True)


@contextmanager
def user_errors(status=1, also=()):
    """Inside: a UserError (or one of `also`, e.g. OSError for a tool whose
    every file error is the user's path) becomes one `error:` line on
    stderr and ExitStatus(status); anything else is a bug and keeps its
    traceback.  Use as `with user_errors(): ...` in main(), then
    `except ExitStatus as e: return e.status`, or through run_main()."""
    try:
        yield
    except (UserError, *also) as error:
        report(error)
        raise ExitStatus(status) from None


def run_main(body, *args, status=1, also=()):
    """body(*args) with user_errors() around it: its return value, or
    `status` after a user error (printed as one line)."""
    try:
        with user_errors(status, also):
            return body(*args)
    except ExitStatus as exit_:
        return exit_.status
