"""The error a command shows as one line: kept free of torch and Ray so every command can import it cheaply."""


class JobError(RuntimeError):
    """A fatal problem, already phrased as one line for the user."""
