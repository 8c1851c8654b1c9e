"""Deadlines in force: ``retrying`` runs an object-store call with backoff within its budget, ``deadline`` tightens
the budget for a block of calls, ``within`` bounds the checks before any work even inside a client library that
ignores deadlines, and ``whole_call`` bounds one whole call of an async backend.
"""

from __future__ import annotations

import contextlib
import contextvars
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import fsspec

from svdbatch.storage.failures import StoreUnreachable, credentials_hint, endpoint, is_transient, unreachable
from svdbatch.storage.options import Deadlines

T = TypeVar("T")
ATTEMPTS = 6
BACKOFF_S = 0.2
PREFLIGHT_S = 20.0  # the checks before any work: an unreachable store is reported well within a minute
UPLOAD_READS = 4  # a whole upload may take this many read timeouts (``whole_call``)
GRACE_S = 5.0  # past a ``within`` bound, for a call inside a client library that ignores our deadlines

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("svdbatch_storage_deadline", default=None)
# The URLs a ``within`` block opened, last one last: named when the block runs past its bound.
opened_urls: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("svdbatch_opened", default=None)


def within(action: Callable[[], T], options: dict[str, Any] | None = None, seconds: float = PREFLIGHT_S) -> T:
    """Run the checks before any work with a bound on their time: retries end by ``seconds`` (``deadline``), and a
    call stuck inside a client library past that (a credential lookup, gcsfs's own fixed retries) is left behind on a
    daemon thread while the store it was talking to is named in one line (``StoreUnreachable``)."""
    opened: list[str] = []
    outcome: dict[str, Any] = {}

    def body() -> None:
        opened_urls.set(opened)
        with deadline(seconds):
            try:
                outcome["value"] = action()
            except BaseException as error:  # noqa: BLE001 - raised again on the caller's thread
                outcome["error"] = error

    thread = threading.Thread(target=contextvars.copy_context().run, args=(body,), name="svdbatch-checks", daemon=True)
    thread.start()
    thread.join(seconds + GRACE_S)
    if thread.is_alive():
        url = opened[-1] if opened else "the object store"
        raise StoreUnreachable(
            f"{url}: {endpoint(url, options)}: no answer in {seconds + GRACE_S:g} s{credentials_hint(url)}; check "
            "the endpoint, the network route and the firewall (--verbose shows the client's own messages)"
        )
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


@contextlib.contextmanager
def deadline(seconds: float = PREFLIGHT_S) -> Iterator[None]:
    """Calls in this block stop retrying ``seconds`` from now (or earlier, by their own budget)."""
    token = _deadline.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        _deadline.reset(token)


def retrying(
    action: Callable[[], T], options: dict[str, Any] | None = None, url: str | None = None, attempts: int = ATTEMPTS
) -> T:
    """Run an object-store call with exponential backoff and jitter, within the budget of ``options``
    (``retry_budget_s``, or the enclosing ``deadline``): no attempt starts that could not end before it.

    A transient failure that outlasts the budget is raised as ``StoreUnreachable`` naming ``url``'s endpoint and the
    cause, when ``url`` is given; otherwise (and for every other failure) the error itself."""
    limits = Deadlines.of(options)
    started = time.monotonic()
    end = started + limits.retry_budget_s
    enclosing = _deadline.get()
    if enclosing is not None:
        end = min(end, enclosing)
    for attempt in range(attempts):
        try:
            return action()
        except Exception as error:  # noqa: BLE001 - classified just below
            if not is_transient(error):
                raise
            pause = BACKOFF_S * 2**attempt * (0.5 + random.random())
            if attempt == attempts - 1 or time.monotonic() + pause + limits.attempt_s > end:
                if url is None:
                    raise
                raise StoreUnreachable(unreachable(url, options, error, time.monotonic() - started)) from error
            time.sleep(pause)
    raise AssertionError("unreachable")


def whole_call(fs: fsspec.AbstractFileSystem, options: dict[str, Any] | None) -> dict[str, Any]:
    """A bound on one whole call of an async backend (fsspec cancels it after ``timeout``): botocore sends a PUT
    with ``Expect: 100-continue`` and aiohttp waits for the server's go-ahead with no timeout of its own, so a store
    that accepts the connection and never answers would hold the upload forever. Generous (``UPLOAD_READS`` read
    timeouts) so a large object still uploads; never past the enclosing ``deadline``."""
    if not getattr(fs, "async_impl", False):
        return {}
    seconds = Deadlines.of(options).read_timeout_s * UPLOAD_READS
    enclosing = _deadline.get()
    if enclosing is not None:
        seconds = max(1.0, min(seconds, enclosing - time.monotonic()))
    return {"timeout": seconds}
