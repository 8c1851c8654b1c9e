"""Which machine this is, and whether a process recorded on this machine still runs: what lets a rerun take the
lease of a predecessor that died here at once instead of waiting for it to expire (lease.py).

A pid alone names a process only on one machine, one boot and one pid namespace, and only until it is reused. So a
machine is its hostname, its boot id (a new one at every boot) and its pid namespace (containers on one kernel share
the boot id and the hostname may repeat, but their pids are their own), and a process is its pid and its start time
in clock ticks after boot (a reused pid starts later). Linux only (/proc): elsewhere nothing can be told.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
START_FIELD = 19  # starttime, field 22 of /proc/PID/stat, counted from the state (field 3) after the command name
STATE_FIELD = 0


def machine() -> tuple[str, str, str]:
    """(hostname, boot id, pid namespace) of this process; an empty part where it cannot be read."""
    try:
        boot_id = BOOT_ID.read_text().strip()
    except OSError:
        boot_id = ""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    return socket.gethostname(), boot_id, namespace


def same_machine(recorded: tuple[str, str, str]) -> bool:
    """Whether a machine recorded by ``machine()`` is this one; False when either side could not read a part."""
    return all(recorded) and recorded == machine()


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat from the state on (the command name may hold spaces and parentheses)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return text.rsplit(")", 1)[1].split()


def start_ticks(pid: int) -> int:
    """When the process started, in clock ticks after boot; 0 where it cannot be read."""
    try:
        fields = _stat(pid)
    except OSError:
        return 0
    return int(fields[START_FIELD]) if fields else 0


def gone(pid: int, started: int) -> bool:
    """Whether process ``pid`` of this machine, started at ``started`` ticks (0: not recorded), has ended: no such
    pid, a zombie, or a pid reused by a process that started at another time. False when it cannot be told."""
    try:
        fields = _stat(pid)
    except OSError:
        return False
    if fields is None:
        return True
    return fields[STATE_FIELD] == "Z" or (started != 0 and int(fields[START_FIELD]) != started)
