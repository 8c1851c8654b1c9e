"""What a user sees on the terminal besides svdbatch's own lines: Ray's native notices, filtered.

Ray Data ships every actor pool's UDF through the object store, and the driver's C++ core worker then logs an
ERROR-level notice ("... has constructor arguments in the object store and max_restarts > 0 ...") for every pool of
every run, straight to file descriptor 2, where no Python logging setting reaches it. It is Ray's bookkeeping, not a
problem of the job, so the driver drops exactly those lines; everything else on stderr passes through unchanged.
Python's own ``sys.stderr`` keeps writing to the real terminal, so live progress bars still see a TTY.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading

NATIVE_NOTICES = (b"has constructor arguments in the object store and max_restarts > 0",)
_installed = False


def _forward(source: int, target: int) -> None:
    pending = b""
    while chunk := os.read(source, 65536):
        *lines, pending = (pending + chunk).split(b"\n")
        kept = [line for line in lines if not any(notice in line for notice in NATIVE_NOTICES)]
        out = b"".join(line + b"\n" for line in kept)
        if not pending.startswith(b"["):  # a native log line starts with "[date"; anything else (bars) goes now
            out, pending = out + pending, b""
        if out:
            os.write(target, out)
    if pending:
        os.write(target, pending)


def filter_native_notices() -> None:
    """Route this process's stderr through a filter thread; call after Ray has started its own processes."""
    global _installed
    if _installed:
        return
    _installed = True
    original = os.dup(2)
    sys.stderr.flush()
    sys.stderr = open(original, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    pump = threading.Thread(target=_forward, args=(read_end, original), name="svdbatch-stderr", daemon=True)
    pump.start()

    def restore() -> None:
        os.dup2(original, 2)  # closes the pipe's last writer: the pump drains what is left and ends
        pump.join(timeout=2)

    atexit.register(restore)
