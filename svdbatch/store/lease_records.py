"""The lease's records: one JSON file per generation in ``{output}/_job/lease/``, the current lease the highest.

A record is created with an exclusive create (a hard link on local disk, ``If-None-Match: *`` on S3), so of many runs
racing for a generation exactly one creates it; after that only its holder rewrites it. ``standing`` judges a holder
from this process's machine and clock. Free of Ray and torch: plain fsspec through svdbatch.storage.
"""

from __future__ import annotations

import enum
import json
import os
import re
import time
import uuid
from dataclasses import asdict, dataclass, fields
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from svdbatch import formats, storage
from svdbatch.errors import JobError
from svdbatch.store import processes

FOLDER = "_job/lease"
ATTEMPTS = 8  # generations tried while other runs keep winning them; reads of a folder that keeps changing
GENERATION = re.compile(r"^(\d{12})\.json$")


@dataclass(frozen=True)
class Holder:
    """The record a lease generation holds. ``expires`` is seconds since the epoch on the holder's clock; 0 once
    released. ``boot_id``, ``pid_namespace`` and ``pid_started`` (processes.py) tell whether the holder's process
    still runs, from its own machine; empty where the record lacks them (svdbatch/formats.py: lease record 1), so
    the holder cannot be told alive or dead from here."""

    host: str
    pid: int
    run_id: str
    started: float
    expires: float
    boot_id: str = ""
    pid_namespace: str = ""
    pid_started: int = 0

    def describe(self) -> str:
        return f"run {self.run_id} on {self.host} (pid {self.pid}, started {utc(self.started)})"


class Standing(enum.Enum):
    """What a lease's current holder means for a run that wants it."""

    EXPIRED = "expired"  # released, or not renewed in time: take it
    GONE = "gone"  # its process, on this machine, has ended: take it at once
    RUNNING = "running"  # its process runs on this machine (and renews the lease): refuse
    ELSEWHERE = "elsewhere"  # another machine's, or cannot be checked: wait for it to expire, up to a bound


def standing(holder: Holder, now: float) -> Standing:
    """Judge the current holder from this process's machine (processes.py) and clock."""
    if now >= holder.expires:
        return Standing.EXPIRED
    if not processes.same_machine((holder.host, holder.boot_id, holder.pid_namespace)):
        return Standing.ELSEWHERE
    return Standing.GONE if processes.gone(holder.pid, holder.pid_started) else Standing.RUNNING


def utc(moment: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(moment))


def lease_folder(output: str, options: dict[str, Any]) -> tuple[fsspec.AbstractFileSystem, str]:
    return storage.filesystem(storage.join(output, FOLDER), options)


def record_file(generation: int) -> str:
    """The file name of a generation's record."""
    return f"{generation:012d}.json"


def record_bytes(holder: Holder) -> bytes:
    return json.dumps(asdict(holder)).encode()


def generations(fs: fsspec.AbstractFileSystem, folder: str) -> list[int]:
    """The generations in the folder, oldest first; fresh from the store (s3fs would answer from its cache)."""
    fs.invalidate_cache(folder)
    try:
        paths = storage.retrying(lambda: fs.ls(folder, detail=False))
    except FileNotFoundError:
        return []
    found = (GENERATION.match(path.rstrip("/").rsplit("/", 1)[-1]) for path in paths)
    return sorted(int(match.group(1)) for match in found if match)


def newest_record(fs: fsspec.AbstractFileSystem, folder: str) -> tuple[int, Holder] | None:
    """The highest generation and its record; None when there is none. A record removed between the listing and
    the read was superseded: the next listing shows its successor."""
    for _ in range(ATTEMPTS):
        found = generations(fs, folder)
        if not found:
            return None
        try:
            return found[-1], read_record(fs, f"{folder}/{record_file(found[-1])}")
        except FileNotFoundError:
            continue
    raise JobError(f"lease {folder}: it keeps changing; try again")


def read_record(fs: fsspec.AbstractFileSystem, path: str) -> Holder:
    """A record of any version (svdbatch/formats.py)."""
    record = json.loads(storage.retrying(lambda: fs.cat_file(path)))
    return Holder(**formats.known_fields(record, [field.name for field in fields(Holder)]))


def create_record_if_absent(fs: fsspec.AbstractFileSystem, path: str, holder: Holder) -> bool:
    """Write the record only where none exists; True if this call wrote it.

    Local disk: written aside, then hard-linked into place (``link`` fails on an existing name, atomically, and
    readers never see a partial record). Other stores: fsspec's ``pipe_file(mode="create")``, a PUT with
    ``If-None-Match: *`` on S3; fsspec's default for other stores checks, then writes (not atomic).
    """
    data = record_bytes(holder)
    if isinstance(fs, LocalFileSystem):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        partial = os.path.join(os.path.dirname(path), f".{uuid.uuid4().hex}.partial")
        with open(partial, "wb") as handle:
            handle.write(data)
        try:
            os.link(partial, path)
        except FileExistsError:
            return False
        finally:
            os.remove(partial)
        return True
    try:
        storage.retrying(lambda: fs.pipe_file(path, data, mode="create"))
    except FileExistsError:
        # A PUT retried after a lost response finds the record its first try wrote.
        try:
            return read_record(fs, path) == holder
        except FileNotFoundError:
            return False
    return True


def remove_record(fs: fsspec.AbstractFileSystem, path: str) -> None:
    try:
        storage.retrying(lambda: fs.rm_file(path))
    except FileNotFoundError:
        pass
