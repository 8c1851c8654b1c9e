"""The driver's loop over the finished rows: result batches pulled on a thread of their own, so that in between the
driver keeps its voice (the watchdog's waiting and stall lines, the timeouts that end a job) and hears a stop request
(stopping.py), on which it halts Ray Data's executions and yields only the batches Ray Data already had.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from queue import Empty, Full, Queue

from svdbatch.errors import JobError
from svdbatch.ray import internals
from svdbatch.ray.cluster import pending
from svdbatch.run import stopping
from svdbatch.run.watchdog import Watchdog

WATCH_EVERY_S = 1.0
HALT_WAIT_S = 10.0  # after a stop request, the longest wait for rows Ray Data already had
_END = object()  # what the pump hands over after the last batch


def _pump(batches: Iterator, results: Queue, stop: threading.Event) -> None:
    """Hand each batch over to the driver thread, then ``_END``, or the error the iterator raised; give up on a
    ``stop`` once the driver no longer takes them."""
    try:
        for batch in batches:
            while not stop.is_set():
                try:
                    results.put(batch, timeout=WATCH_EVERY_S)
                    break
                except Full:
                    continue
            if stop.is_set():
                return
        results.put(_END)
    except BaseException as error:  # noqa: BLE001 - handed to the driver thread, which raises it
        results.put(error)


def _report(watchdog: Watchdog, workers_actor, progress: bool) -> None:
    """While no batch comes: let the watchdog speak (waiting lines only with ``progress``), or end the job."""
    import ray

    up = len(ray.get(workers_actor.records.remote()))
    verdict = watchdog.check(up, time.monotonic(), pending)
    if verdict.fatal:
        raise JobError(verdict.fatal) from None
    if verdict.line and (progress or not verdict.line.startswith("svdbatch: waiting")):
        print(verdict.line, file=sys.stderr, flush=True)


def watched(batches: Iterator, watchdog: Watchdog, workers_actor, progress: bool) -> Iterator:
    """Yield result batches as they come; in between, let the watchdog report, and end a job that waits too long.

    A job the watchdog ends leaves the pump thread waiting until the process exits (the CLI exits on the error
    line). On a stop request the stream is halted; the batches Ray Data still hands over are yielded, then
    ``Stopped`` is raised.
    """
    results: Queue = Queue(maxsize=4)
    stop = threading.Event()
    threading.Thread(target=_pump, args=(batches, results, stop), name="svdbatch-results", daemon=True).start()
    halted = None  # when a stop request ended the stream; from then on only what Ray Data had already is yielded
    try:
        while True:
            if halted is None and stopping.requested():
                internals.halt_executions()
                halted = time.monotonic()
            try:
                got = results.get(timeout=WATCH_EVERY_S)
            except Empty:
                if halted is None:
                    _report(watchdog, workers_actor, progress)
                elif time.monotonic() - halted >= HALT_WAIT_S:
                    raise stopping.Stopped(stopping.requested()) from None
                continue
            if halted is not None and (got is _END or isinstance(got, BaseException)):
                raise stopping.Stopped(stopping.requested())
            if got is _END:
                return
            if isinstance(got, BaseException):
                raise got
            watchdog.finished(got.num_rows, time.monotonic())
            yield got
    finally:
        stop.set()
