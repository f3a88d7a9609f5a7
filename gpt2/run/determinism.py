"""--deterministic's one line for an operation that has no deterministic
kernel.  With torch.use_deterministic_algorithms(True) (warn_only=False)
such an operation raises RuntimeError("<op> does not have a deterministic
implementation, but you set ...") wherever it runs, deep in a forward or
backward; the entry point (gpt2/train.py main) turns that, and only that,
into one `error:` line naming the operation, exit status 1."""

import re

NONDETERMINISTIC = re.compile(r"^(\S+) does not have a deterministic implementation")


def nondeterministic_operation(exc):
    """The operation an exception says has no deterministic kernel, or None."""
    match = NONDETERMINISTIC.match(str(exc)) if isinstance(exc, RuntimeError) else None
    return match[1] if match else None


def error_message(operation):
    return (f"--deterministic: {operation} has no deterministic kernel on this device, so this run cannot "
            "repeat bit for bit; run without --deterministic (DETERMINISTIC=n)")  # fmt: skip
