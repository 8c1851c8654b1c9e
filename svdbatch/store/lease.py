"""One live run per output: a lease in ``{output}/_job/lease/`` that a run holds, renews and releases.

Two runs on one output at once would render everything twice (the table stays consistent; the bill doubles). So a
run takes the output's lease before it touches the output, renews it on a thread while it runs, and releases it when
it ends. A run that finds the lease held: takes it at once when the holder died on this machine (its process is
gone), refuses naming the holder when the holder runs on this machine, and waits, up to a bound, for a holder
elsewhere (or one that cannot be checked), whose lease expires by itself within one TTL of its last renewal if it
is dead. The user can also take it over.

Each holder writes one record, a generation: ``_job/lease/{generation:012d}.json``; the current lease is the
highest generation. Acquiring and taking over are both *creating the next generation* with an exclusive create (a
hard link on local disk, ``If-None-Match: *`` on S3), so of many runs racing for a generation exactly one wins. A
holder only ever rewrites its own generation (to renew or release it), so no write needs a compare-and-swap; it
learns that it lost the lease when it sees a higher generation. The winner of a generation removes the older ones;
numbers never restart, because a released record is kept (expired), not deleted.

Free of Ray and torch: plain fsspec through storage.py.
"""

from __future__ import annotations

import _thread
import enum
import json
import os
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from svdbatch import storage
from svdbatch.errors import JobError
from svdbatch.store import processes

FOLDER = "_job/lease"
RENEWALS_PER_TTL = 4  # a holder renews every ttl/4: it loses the lease only after three renewals in a row failed
ATTEMPTS = 8  # generations tried while other runs keep winning them
POLL_S = 1.0  # how often a waiting run reads the lease again
# A dead holder's lease expires at most one TTL after its last renewal, so a run (an automatic retry) that waits one
# TTL (its own spec's, normally the holder's too) sees any dead holder's lease expire; the margin covers the store's
# latency and clock skew between machines.
WAIT_MARGIN_S = 30.0
GENERATION = re.compile(r"^(\d{12})\.json$")


class LeaseHeld(JobError):
    """Another live run holds the output's lease."""


class LeaseLost(JobError):
    """This run's lease was taken over, or could not be renewed before it expired."""


@dataclass(frozen=True)
class Holder:
    """The record a lease generation holds. ``expires`` is seconds since the epoch on the holder's clock; 0 once
    released. ``boot_id``, ``pid_namespace`` and ``pid_started`` (processes.py) tell whether the holder's process
    still runs, from its own machine; records written before they existed lack them (empty: cannot be told)."""

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


def stop_main_thread(lost: LeaseLost) -> None:
    """What a run does when its lease is lost: interrupt the main thread, where the run is, as Ctrl-C would."""
    _thread.interrupt_main()


class Lease:
    """The lease this run holds: ``keep`` renews it on a thread, ``check`` renews it now, ``release`` gives it up."""

    def __init__(self, output: str, options: dict[str, Any], generation: int, holder: Holder, ttl_s: float):
        self.output = output
        self.options = options
        self.generation = generation
        self.holder = holder
        self.ttl_s = ttl_s
        self.lost: LeaseLost | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._keeper: threading.Thread | None = None

    @property
    def url(self) -> str:
        return storage.join(self.output, FOLDER, name(self.generation))

    def renew(self) -> None:
        """Push the expiry one TTL ahead; raises LeaseLost if a newer generation exists (another run took over)."""
        holder = replace(self.holder, expires=time.time() + self.ttl_s)
        storage.write_bytes(self.url, encode(holder), self.options)
        self.holder = holder
        fs, folder = lease_folder(self.output, self.options)
        newest = current(fs, folder)
        if newest is not None and newest[0] > self.generation:
            raise LeaseLost(f"output {self.output}: lease taken over by {newest[1].describe()}; this run stops")

    def keep(self, on_lost: Callable[[LeaseLost], None] = stop_main_thread) -> None:
        """Renew every ttl/RENEWALS_PER_TTL on a daemon thread until ``release``; once the lease is lost, ``lost``
        says why and ``on_lost`` is called (by default it interrupts the main thread: the run must not go on)."""

        def loop() -> None:
            while not self._stop.wait(self.ttl_s / RENEWALS_PER_TTL):
                if not self._renewed():
                    if not self._stop.is_set():
                        on_lost(self.lost)
                    return

        self._keeper = threading.Thread(target=loop, name="svdbatch-lease", daemon=True)
        self._keeper.start()

    def check(self) -> None:
        """Renew now, on the caller's thread; raises LeaseLost if the lease is gone. Called before a publish."""
        if not self._renewed():
            raise self.lost

    def _renewed(self) -> bool:
        """Renew under the lock ``keep`` and ``check`` share; False once the lease is lost. A store error is retried
        at the next renewal until the lease has expired."""
        with self._lock:
            if self.lost is None:
                try:
                    self.renew()
                except LeaseLost as error:
                    self.lost = error
                except Exception as error:  # noqa: BLE001 - store trouble: the next renewal tries again
                    if time.time() >= self.holder.expires:
                        self.lost = LeaseLost(
                            f"output {self.output}: lease expired, not renewed since {utc(self.holder.expires)} "
                            f"({type(error).__name__}: {error}); this run stops"
                        )
            return self.lost is None

    def release(self) -> None:
        """Stop renewing and mark the record released (kept, so generation numbers never restart), so the next run
        starts at once. A lost lease's record is removed: a newer generation exists (its last renewal may have
        written the record again after the winner removed it). Never raises: the run has ended, and an unreleased
        lease expires."""
        with self._lock:
            self._stop.set()
        if self._keeper is not None:
            self._keeper.join()
        try:
            if self.lost is not None:
                remove(*storage.filesystem(self.url, self.options))
            else:
                storage.write_bytes(self.url, encode(replace(self.holder, expires=0.0)), self.options)
        except storage.StoreUnreachable:
            pass  # the run's own line names the store; the lease expires, and a rerun on this host takes it at once
        except Exception as error:  # noqa: BLE001 - reported; the lease then expires by itself
            print(
                f"svdbatch: could not release the lease {self.url} ({type(error).__name__}: {error}); "
                f"it expires at {utc(self.holder.expires)}",
                file=sys.stderr,
                flush=True,
            )


def acquire(
    output: str, options: dict[str, Any], run_id: str, ttl_s: float, take_over: bool = False, wait_s: float = 0.0
) -> Lease:
    """Take the output's lease for ``run_id``, unless another run holds it (``standing``): one whose process ended on
    this machine is replaced at once; one running on this machine, or one elsewhere still renewing after ``wait_s``
    seconds, makes it raise LeaseHeld naming the holder. ``take_over`` takes it from any holder. Waiting and
    replacing each say so in one line on stderr."""
    fs, folder = lease_folder(output, options)
    started = time.time()
    deadline = time.monotonic() + wait_s
    for _ in range(ATTEMPTS):
        latest, judged, waited = _judged(fs, folder, output, take_over, deadline, wait_s)
        if judged in (Standing.RUNNING, Standing.ELSEWHERE):
            holder = latest[1]
            after = f" (still renewed after waiting {wait_s:g} s, --lease-wait)" if waited else ""
            raise LeaseHeld(
                f"output {output} is in use by {holder.describe()}; its lease runs until {utc(holder.expires)} "
                f"and is renewed while it lives{after}: wait for it to end, or pass --take-over if it is dead"
            )
        generation = 1 if latest is None else latest[0] + 1
        host, boot_id, namespace = processes.machine()
        pid = os.getpid()
        mine = Holder(host, pid, run_id, started, time.time() + ttl_s, boot_id, namespace, processes.start_ticks(pid))
        if create(fs, f"{folder}/{name(generation)}", mine):
            for older in generations(fs, folder):
                if older < generation:
                    remove(fs, f"{folder}/{name(older)}")
            if judged is Standing.GONE:
                _say(f"output {output}: took the lease of {latest[1].describe()}, whose process has ended")
            return Lease(output, options, generation, mine, ttl_s)
    raise JobError(f"output {output}: could not take its lease in {ATTEMPTS} tries; other runs keep taking it")


def _judged(
    fs: fsspec.AbstractFileSystem, folder: str, output: str, take_over: bool, deadline: float, wait_s: float
) -> tuple[tuple[int, Holder] | None, Standing, bool]:
    """The current generation and its standing, once it is no longer a holder elsewhere or the deadline passed;
    and whether this waited (saying so once)."""
    waited = False
    while True:
        latest = current(fs, folder)
        judged = Standing.EXPIRED if latest is None or take_over else standing(latest[1], time.time())
        if judged is not Standing.ELSEWHERE or time.monotonic() >= deadline:
            return latest, judged, waited
        if not waited:
            waited = True
            _say(
                f"output {output} is held by {latest[1].describe()} until {utc(latest[1].expires)}, on another "
                f"machine or a process that cannot be checked from here: waiting up to {wait_s:g} s for its lease "
                "to expire (--lease-wait)"
            )
        time.sleep(max(0.0, min(POLL_S, deadline - time.monotonic())))


def _say(line: str) -> None:
    print(f"svdbatch: {line}", file=sys.stderr, flush=True)


def lease_folder(output: str, options: dict[str, Any]) -> tuple[fsspec.AbstractFileSystem, str]:
    return storage.filesystem(storage.join(output, FOLDER), options)


def name(generation: int) -> str:
    return f"{generation:012d}.json"


def encode(holder: Holder) -> bytes:
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


def current(fs: fsspec.AbstractFileSystem, folder: str) -> tuple[int, Holder] | None:
    """The highest generation and its record; None when there is none. A record removed between the listing and
    the read was superseded: the next listing shows its successor."""
    for _ in range(ATTEMPTS):
        found = generations(fs, folder)
        if not found:
            return None
        try:
            return found[-1], read(fs, f"{folder}/{name(found[-1])}")
        except FileNotFoundError:
            continue
    raise JobError(f"lease {folder}: it keeps changing; try again")


def read(fs: fsspec.AbstractFileSystem, path: str) -> Holder:
    """A record, of this version or any other: fields this version does not know are left out."""
    record = json.loads(storage.retrying(lambda: fs.cat_file(path)))
    return Holder(**{field.name: record[field.name] for field in fields(Holder) if field.name in record})


def create(fs: fsspec.AbstractFileSystem, path: str, holder: Holder) -> bool:
    """Write the record only where none exists; True if this call wrote it.

    Local disk: written aside, then hard-linked into place (``link`` fails on an existing name, atomically, and
    readers never see a partial record). Other stores: fsspec's ``pipe_file(mode="create")``, a PUT with
    ``If-None-Match: *`` on S3; fsspec's default for other stores checks, then writes (not atomic).
    """
    data = encode(holder)
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
            return read(fs, path) == holder
        except FileNotFoundError:
            return False
    return True


def remove(fs: fsspec.AbstractFileSystem, path: str) -> None:
    try:
        storage.retrying(lambda: fs.rm_file(path))
    except FileNotFoundError:
        pass
