"""User-facing errors: kept free of torch and Ray so every command can import them cheaply.

Every problem the user can fix derives from ``UserError`` and is phrased as one line; the CLI prints that line
(and, with --verbose, the trace with its causes) and exits non-zero.
"""


class UserError(Exception):
    """A problem the user can fix, already phrased as one line."""


class JobError(UserError, RuntimeError):
    """A fatal problem for a job: the job stops, with this line."""


def root_message(error: BaseException) -> str:
    """The one line to show for a failure deep inside Ray: the first user error in the chain of causes (it says what
    to fix), else the innermost cause, without Ray's wrapping."""
    seen = error
    while not isinstance(seen, UserError):
        cause = getattr(seen, "cause", None) or seen.__cause__
        if cause is None or cause is seen:
            break
        seen = cause
    if isinstance(seen, UserError):
        return str(seen)
    lines = [line for line in str(seen).strip().splitlines() if line.strip()]
    return f"{type(seen).__name__}: {lines[0] if lines else 'no message'} (--verbose for the full trace)"
