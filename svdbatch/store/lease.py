"""One live run per output: a lease in ``{output}/_job/lease/`` that a run holds, renews and releases.

Two runs on one output at once would render everything twice (the table stays consistent; the bill doubles). So a
run takes the output's lease before it touches the output, renews it on a thread while it runs, and releases it when
it ends. A run that finds the lease held: takes it at once when the holder died on this machine (its process is
gone), refuses naming the holder when the holder runs on this machine, and waits, up to a bound, for a holder
elsewhere (or one that cannot be checked), whose lease expires by itself within one TTL of its last renewal if it
is dead. The user can also take it over.

Each holder writes one record, a generation (lease_records.py): ``_job/lease/{generation:012d}.json``; the
current lease is the highest generation. Acquiring and taking over are both *creating the next generation* with an
exclusive create (a hard link on local disk, ``If-None-Match: *`` on S3), so of many runs racing for a generation
exactly one wins. A holder only ever rewrites its own generation (to renew or release it), so no write needs a
compare-and-swap; it learns that it lost the lease when it sees a higher generation. The winner of a generation
removes the older ones; numbers never restart, because a released record is kept (expired), not deleted.

Free of Ray and torch: plain fsspec through svdbatch.storage.
"""

from __future__ import annotations

import _thread
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import fsspec

from svdbatch import storage
from svdbatch.errors import JobError
from svdbatch.store import processes
from svdbatch.store.lease_records import (
    ATTEMPTS,
    FOLDER,
    Holder,
    Standing,
    create_record_if_absent,
    generations,
    lease_folder,
    newest_record,
    record_bytes,
    record_file,
    remove_record,
    standing,
    utc,
)

RENEWALS_PER_TTL = 4  # a holder renews every ttl/4: it loses the lease only after three renewals in a row failed
POLL_S = 1.0  # how often a waiting run reads the lease again
# A dead holder's lease expires at most one TTL after its last renewal, so a run (an automatic retry) that waits one
# TTL (its own spec's, normally the holder's too) sees any dead holder's lease expire; the margin covers the store's
# latency and clock skew between machines.
WAIT_MARGIN_S = 30.0


class LeaseHeld(JobError):
    """Another live run holds the output's lease."""


class LeaseLost(JobError):
    """This run's lease was taken over, or could not be renewed before it expired."""


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
        return storage.join(self.output, FOLDER, record_file(self.generation))

    def renew(self) -> None:
        """Push the expiry one TTL ahead; raises LeaseLost if a newer generation exists (another run took over)."""
        holder = replace(self.holder, expires=time.time() + self.ttl_s)
        storage.write_bytes(self.url, record_bytes(holder), self.options)
        self.holder = holder
        fs, folder = lease_folder(self.output, self.options)
        newest = newest_record(fs, folder)
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
                remove_record(*storage.filesystem(self.url, self.options))
            else:
                storage.write_bytes(self.url, record_bytes(replace(self.holder, expires=0.0)), self.options)
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
        if create_record_if_absent(fs, f"{folder}/{record_file(generation)}", mine):
            for older in generations(fs, folder):
                if older < generation:
                    remove_record(fs, f"{folder}/{record_file(older)}")
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
        latest = newest_record(fs, folder)
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

