"""Exceptions that end a run with one `error: ...` line instead of a traceback."""

from lib.errors import UserError


class UsageError(UserError):
    """Something the user can fix: a bad combination of flags, a missing
    checkpoint, a model that cannot be built.  The message says what is wrong
    and how to fix it."""


class NonFiniteLossError(UserError):
    """The loss became inf or NaN; the run stops before any checkpoint holds
    the broken weights."""
