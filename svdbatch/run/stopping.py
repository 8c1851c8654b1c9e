"""Graceful stop: the first SIGINT or SIGTERM asks a run to stop, a second one ends the process at once.

``svdbatch run`` and ``demo`` handle both signals (``handled``). Outside the render loop the handler raises
``Stopped`` wherever the driver is (starting Ray, joining, publishing): the run then commits and publishes what it
has. Inside the loop (``polled``) it only records the request, which the loop polls between batches, so the rows Ray
Data already handed over are committed first. Free of Ray and torch so these rules are unit-tested without them.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}  # 128 + the signal's number, as a shell reports it


class Stopped(BaseException):
    """A stop signal arrived. A BaseException, like KeyboardInterrupt, so that no ``except Exception`` (ours or
    Ray's) turns it into a job failure."""

    def __init__(self, signum: int, committed: int | None = None):
        super().__init__(signum, committed)
        self.signum = signum
        self.committed = committed  # videos this run committed, once the run has published them

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.signum]

    def line(self) -> str:
        """``committed`` is None when the stop came before the run could commit anything (during the checks or
        while Ray started): say that, not "None"."""
        done = "nothing committed yet" if self.committed is None else f"{self.committed} videos committed this run"
        return (
            f"svdbatch: stopped by {signal.Signals(self.signum).name}: {done}; "
            "run the same command again to resume"
        )


class _State:
    def __init__(self):
        self.active = False  # inside ``handled``
        self.polled = False  # inside ``polled``
        self.requested: int | None = None  # the first stop signal's number


_state = _State()


def requested() -> int | None:
    """The number of the stop signal received, or None."""
    return _state.requested


def _handle(signum: int, frame) -> None:
    if _state.requested is not None:
        # sys.stderr's own descriptor: fd 2 may be a pipe to a filter thread (console.py) that os._exit ends first
        os.write(sys.stderr.fileno(), f"svdbatch: {signal.Signals(signum).name} again: exiting now\n".encode())
        os._exit(EXIT_CODES[signum])
    _state.requested = signum
    if not _state.polled:
        raise Stopped(signum)


def _install() -> None:
    for signum in EXIT_CODES:
        signal.signal(signum, _handle)


@contextmanager
def handled() -> Iterator[None]:
    """SIGINT and SIGTERM stop the run inside; the handlers in force before come back afterwards."""
    previous = {signum: signal.getsignal(signum) for signum in EXIT_CODES}
    _state.active, _state.polled, _state.requested = True, False, None
    _install()
    try:
        yield
    finally:
        _state.active = False
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextmanager
def ray_starting() -> Iterator[None]:
    """Around ``ray.init`` while ``handled``. It puts a SIGTERM handler of its own in force while it starts the node
    (``sys.exit(15)``), then its core worker a native one (a stack dump, then abort): a SIGTERM meanwhile is a stop
    like any other, and ours are installed again once Ray is up."""
    try:
        yield
    except SystemExit as error:
        if not _state.active or error.code != signal.SIGTERM:
            raise
        _state.requested = signal.SIGTERM
        raise Stopped(signal.SIGTERM) from None
    if _state.active:
        _install()


@contextmanager
def polled() -> Iterator[None]:
    """Inside, a stop signal is only recorded: the code inside polls ``requested()``. Leaving normally raises
    ``Stopped`` for a request nobody acted on."""
    if _state.requested is not None:
        raise Stopped(_state.requested)
    _state.polled = True
    try:
        yield
    finally:
        _state.polled = False
    if _state.requested is not None:
        raise Stopped(_state.requested)
