"""fsspec URLs in one place: local paths and s3/gs/az URLs are read and written the same way.

Writes are atomic from a reader's point of view: a local file is written beside its final name and renamed; an
object store PUT only becomes visible once complete.

Every object-store call has a deadline. Three keys of ``storage_options`` are svdbatch's own (``DEADLINES``): a
connect and a read timeout, translated here into each backend's own options (s3fs/botocore, gcsfs, adlfs, http),
and a budget in seconds for ``retrying``. There is one retry layer: the backends' own retries are turned off
(botocore ``total_max_attempts`` 1, s3fs ``retries`` 1, Azure ``retry_total`` 0) and ``retrying`` retries within the
budget, so the layers never multiply. A call therefore ends within its budget plus one attempt (connect + read
timeout). gcsfs alone retries 6 times by itself (fixed when its class is defined): a gs:// call can take up to ~6
attempts plus ~31 s of its backoff before ``retrying`` sees it fail. ``deadline`` tightens the budget for a block of calls: the pre-flight checks use it so an
unreachable store is named in one line within a minute.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import os
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import fsspec
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem

from svdbatch.errors import UserError

EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "az": "azure", "abfs": "azure", "abfss": "azure"}


T = TypeVar("T")
ATTEMPTS = 6
BACKOFF_S = 0.2
# svdbatch's own keys of storage_options, with their defaults: per request (a large upload is many requests, each
# with its own deadline), chosen for real clouds, where a first byte takes well under a second.
DEADLINES = {"connect_timeout_s": 10.0, "read_timeout_s": 30.0, "retry_budget_s": 120.0}
PREFLIGHT_S = 20.0  # the checks before any work: an unreachable store is reported well within a minute
UPLOAD_READS = 4  # a whole upload may take this many read timeouts (``whole_call``)
GRACE_S = 5.0  # past a ``within`` bound, for a call inside a client library that ignores our deadlines
S3_SCHEMES = ("s3", "s3a")
GCS_SCHEMES = ("gs", "gcs")
AZURE_SCHEMES = ("az", "abfs", "abfss")
HTTP_SCHEMES = ("http", "https")
SECRET_WORDS = ("secret", "password", "token", "key", "credential", "sas", "signature")
# Fields of fsspec's info() that name one version of an object, strongest first (S3/Azure, GCS, HTTP).
VERSION_FIELDS = ("VersionId", "version_id", "generation", "ETag", "etag", "md5Hash", "content_md5")
MODIFIED_FIELDS = ("mtime", "LastModified", "last_modified", "updated", "mtime_ns")
INFO_THREADS = 16


class StorageError(UserError, RuntimeError):
    """A URL that cannot be used, phrased for the user."""


TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}
TRANSIENT_CODES = {
    "SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "Throttling", "ThrottlingException",
    "TooManyRequests", "RequestLimitExceeded", "OperationTimedOut", "ServerBusy",
    "ConditionalRequestConflict",  # S3's 409 while another conditional write to the key is in flight: retry it
}
TRANSIENT_ERRNOS = {
    errno.EBUSY, errno.ETIMEDOUT, errno.ECONNRESET, errno.ECONNREFUSED, errno.ECONNABORTED, errno.EPIPE,
    errno.EAGAIN, getattr(errno, "EREMOTEIO", errno.EIO),
}
# Connection and timeout errors of the object-store clients (botocore, aiohttp, requests) that do not derive from
# the built-in ConnectionError or TimeoutError, recognised by class name so no client library is imported here.
TRANSIENT_CLASSES = {
    "ConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "EndpointConnectionError", "ConnectionClosedError",
    "ClientConnectionError", "ServerDisconnectedError", "ServerTimeoutError", "ClientPayloadError",
}
PERMANENT = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError)


def is_transient(error: BaseException) -> bool:
    """Worth retrying: throttling, 5xx, timeouts and dropped connections; never a missing object or a 403.

    Decided from what the clients attach, on the error and its causes (fsspec wraps the client's): the HTTP status,
    the service's error code, the errno, or the class of a connection error.
    """
    if isinstance(error, PERMANENT):
        return False
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if _transient(error):
            return True
        error = error.__cause__
    return False


def _transient(error: BaseException) -> bool:
    if isinstance(error, (TimeoutError, ConnectionError)):
        return True
    if isinstance(error, OSError) and error.errno in TRANSIENT_ERRNOS:
        return True
    if any(kind.__name__ in TRANSIENT_CLASSES for kind in type(error).__mro__):
        return True
    response = getattr(error, "response", None)
    if isinstance(response, dict):
        status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        return status in TRANSIENT_STATUS or (response.get("Error") or {}).get("Code") in TRANSIENT_CODES
    for name in ("status", "status_code", "code"):
        status = getattr(error, name, None)
        if isinstance(status, int) and not isinstance(status, bool):
            return status in TRANSIENT_STATUS
    return False


class StoreUnreachable(StorageError):
    """An object store that did not answer, refused the connection or kept failing until the budget ran out."""


@dataclass(frozen=True)
class Deadlines:
    """The deadlines of one job's object-store calls, read from its storage_options (``DEADLINES``)."""

    connect_timeout_s: float = DEADLINES["connect_timeout_s"]
    read_timeout_s: float = DEADLINES["read_timeout_s"]
    retry_budget_s: float = DEADLINES["retry_budget_s"]

    @classmethod
    def of(cls, options: dict[str, Any] | None) -> Deadlines:
        return cls(**{name: float(options[name]) for name in DEADLINES if options and name in options})

    @property
    def attempt_s(self) -> float:
        """The longest one attempt can take: connecting, then waiting for an answer."""
        return self.connect_timeout_s + self.read_timeout_s


_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("svdbatch_storage_deadline", default=None)
_opened: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("svdbatch_storage_opened", default=None)


def within(action: Callable[[], T], options: dict[str, Any] | None = None, seconds: float = PREFLIGHT_S) -> T:
    """Run the checks before any work with a bound on their time: retries end by ``seconds`` (``deadline``), and a
    call stuck inside a client library past that (a credential lookup, gcsfs's own fixed retries) is left behind on a
    daemon thread while the store it was talking to is named in one line (``StoreUnreachable``)."""
    opened: list[str] = []
    outcome: dict[str, Any] = {}

    def body() -> None:
        _opened.set(opened)
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
            f"{url}: {endpoint(url, options)}: no answer in {seconds + GRACE_S:g} s{_credentials_hint(url)}; check "
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


def endpoint(url: str, options: dict[str, Any] | None = None) -> str:
    """The server a URL's calls go to, as the user would recognise it (a custom endpoint, or the cloud's)."""
    options = options or {}
    kind = scheme(url)
    if kind in S3_SCHEMES:
        custom = (options.get("client_kwargs") or {}).get("endpoint_url") or options.get("endpoint_url")
        return custom or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or "AWS S3"
    if kind in GCS_SCHEMES:
        return options.get("endpoint_url") or os.environ.get("STORAGE_EMULATOR_HOST") or "https://storage.googleapis.com"
    if kind in AZURE_SCHEMES:
        account = options.get("account_name") or os.environ.get("AZURE_STORAGE_ACCOUNT_NAME")
        return f"https://{account}.blob.core.windows.net" if account else "Azure Blob Storage"
    if kind in HTTP_SCHEMES:
        head, _, rest = url.partition("://")
        return f"{head}://{rest.split('/', 1)[0]}"
    return kind


def unreachable(url: str, options: dict[str, Any] | None, error: BaseException, waited_s: float) -> str:
    """One line for a store that did not answer: the URL, the endpoint, what happened and for how long."""
    limits = Deadlines.of(options)
    where = f"{url}: {endpoint(url, options)}"
    text = _cause(error)
    if _is_timeout(error):
        return (
            f"{where}: no answer in {limits.read_timeout_s:g} s (gave up after {waited_s:.0f} s; {text})"
            f"{_credentials_hint(url)}; check the endpoint, the network route and the firewall, or raise "
            "storage_options.read_timeout_s"
        )
    if _is_refused(error):
        return f"{where}: cannot connect ({text}){_credentials_hint(url)}; is the store running at that address?"
    return f"{where}: still failing after {waited_s:.0f} s of retries ({text})"


def missing_credentials(url: str, error: BaseException) -> str | None:
    """One line when a store turned the job away for want of credentials, saying what to set; else None."""
    text = " ".join(str(link) for link in _chain(error)).lower()
    names = {type(link).__name__ for link in _chain(error)}
    if not ({"NoCredentialsError", "DefaultCredentialsError"} & names or "anonymous caller" in text):
        return None
    return f"no credentials for {url}: {CREDENTIALS.get(scheme(url), 'give them in storage_options')}"


CREDENTIALS = {
    **dict.fromkeys(
        S3_SCHEMES,
        "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), or give the node an IAM role (instance "
        "profile, IRSA)",
    ),
    **dict.fromkeys(
        GCS_SCHEMES,
        "set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file, run `gcloud auth application-default "
        "login`, or use GKE workload identity",
    ),
    **dict.fromkeys(
        AZURE_SCHEMES,
        "set AZURE_STORAGE_ACCOUNT_NAME with AZURE_STORAGE_ACCOUNT_KEY or AZURE_STORAGE_CONNECTION_STRING, or use "
        "a managed identity (storage_options.anon: false)",
    ),
}


def _credentials_hint(url: str) -> str:
    """For gs:// URLs with no credentials file anywhere gcsfs looks: say so, it is the usual day-one cause."""
    if scheme(url) not in GCS_SCHEMES or os.environ.get("GOOGLE_APPLICATION_CREDENTIALS"):
        return ""
    default = os.path.expanduser("~/.config/gcloud/application_default_credentials.json")
    if os.path.exists(default):
        return ""
    return f"; and no Google credentials were found: {CREDENTIALS['gs']}"


def _cause(error: BaseException) -> str:
    cause = _innermost(error)
    message = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {message[0] if message else 'no message'}"


def _innermost(error: BaseException) -> BaseException:
    seen = {id(error)}
    while error.__cause__ is not None and id(error.__cause__) not in seen:
        error = error.__cause__
        seen.add(id(error))
    return error


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def _is_timeout(error: BaseException) -> bool:
    names = ("ReadTimeoutError", "ConnectTimeoutError", "ServerTimeoutError", "TimeoutError", "timeout")
    return any(
        isinstance(link, TimeoutError) or any(kind.__name__ in names for kind in type(link).__mro__)
        for link in _chain(error)
    )


def _is_refused(error: BaseException) -> bool:
    names = ("EndpointConnectionError", "ClientConnectorError", "ConnectionRefusedError")
    return any(
        isinstance(link, ConnectionRefusedError)
        or (isinstance(link, OSError) and link.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH))
        or any(kind.__name__ in names for kind in type(link).__mro__)
        for link in _chain(error)
    )


def backend_options(url: str, options: dict[str, Any] | None) -> dict[str, Any]:
    """The fsspec options for ``url``'s backend: the user's, without svdbatch's own keys, with the deadlines in
    the backend's words where the user did not set them, and the backend's own retries off (``retrying`` owns
    retrying). Only the backend named by the URL gets its keys: s3fs passes unknown ones on to botocore."""
    limits = Deadlines.of(options)
    given = {name: value for name, value in (options or {}).items() if name not in DEADLINES}
    kind = scheme(url)
    if kind in S3_SCHEMES:
        config = {
            "connect_timeout": limits.connect_timeout_s,
            "read_timeout": limits.read_timeout_s,
            "retries": {"total_max_attempts": 1, "mode": "standard"},
        }
        return {**given, "config_kwargs": {**config, **(given.get("config_kwargs") or {})}}
    if kind in GCS_SCHEMES:
        return {"timeout": limits.attempt_s, **given}
    if kind in AZURE_SCHEMES:
        return {
            "connection_timeout": limits.connect_timeout_s,
            "read_timeout": limits.read_timeout_s,
            "retry_total": 0,
            **given,
        }
    if kind in HTTP_SCHEMES and "client_kwargs" not in given:
        import aiohttp  # fsspec's http backend is built on it

        timeout = aiohttp.ClientTimeout(sock_connect=limits.connect_timeout_s, sock_read=limits.read_timeout_s)
        return {**given, "client_kwargs": {"timeout": timeout}}
    return given


def redact(options: Any) -> Any:
    """storage_options with every secret-looking value replaced, for logs, errors and the job record."""
    if isinstance(options, dict):
        return {
            name: "***" if any(word in name.lower() for word in SECRET_WORDS) and value else redact(value)
            for name, value in options.items()
        }
    return options


def scheme(url: str) -> str:
    head, sep, _ = url.partition("://")
    return head.lower() if sep else "file"


def filesystem(url: str, options: dict[str, Any] | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem for a URL and the path inside it; a missing client names the extra to install."""
    try:
        fs, path = url_to_fs(url, **backend_options(url, options))
    except ImportError as error:
        extra = EXTRAS.get(scheme(url))
        hint = f"pip install 'svdbatch[{extra}]'" if extra else "install its fsspec implementation"
        raise StorageError(f"{url}: no client for {scheme(url)}:// URLs; {hint}") from error
    except ValueError as error:
        raise StorageError(f"{url}: {error}") from error
    opened = _opened.get()
    if opened is not None:
        opened.append(url)
    if scheme(url) in S3_SCHEMES:
        fs.retries = 1  # s3fs's own retry loop (not an option it takes): ``retrying`` is the one retry layer
    return fs, path


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *(part.strip("/") for part in parts)])


def read_bytes(url: str, options: dict[str, Any] | None = None) -> bytes:
    fs, path = filesystem(url, options)
    return retrying(lambda: fs.cat_file(path), options, url)


def write_bytes(url: str, data: bytes, options: dict[str, Any] | None = None) -> None:
    fs, path = filesystem(url, options)
    if isinstance(fs, LocalFileSystem):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        # Hidden while partial: readers of a folder of Parquet files (pyarrow, DuckDB) skip names starting with ".".
        partial = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.partial-{uuid.uuid4().hex}")
        try:
            with open(partial, "wb") as handle:
                handle.write(data)
            os.replace(partial, path)
        finally:
            if os.path.exists(partial):
                os.remove(partial)
        return
    # One PUT (or a multipart upload completed at the end): the object appears whole or not at all.
    retrying(lambda: fs.pipe_file(path, data, **whole_call(fs, options)), options, url)


def exists(url: str, options: dict[str, Any] | None = None) -> bool:
    fs, path = filesystem(url, options)
    return retrying(lambda: fs.exists(path), options, url)


def delete(url: str, options: dict[str, Any] | None = None) -> None:
    """Remove an object; one already gone is fine."""
    fs, path = filesystem(url, options)
    try:
        retrying(lambda: fs.rm(path), options, url)
    except FileNotFoundError:
        pass


def check_writable(url: str, options: dict[str, Any] | None = None) -> None:
    """Fail fast, before any GPU work, when the output cannot be written."""
    probe = join(url, "_job", f".write-check-{uuid.uuid4().hex}")
    try:
        write_bytes(probe, b"ok", options)
        delete(probe, options)
    except StoreUnreachable as error:
        raise StoreUnreachable(str(error).replace(probe, url)) from error.__cause__
    except StorageError:
        raise
    except Exception as error:  # noqa: BLE001 - any failure here means the same thing to the user
        no_credentials = missing_credentials(url, error)
        raise StorageError(no_credentials or f"output {url} is not writable: {_cause(error)}") from error


def check_readable(url: str, options: dict[str, Any] | None = None) -> None:
    """Fail fast when a folder or object cannot be reached, for commands that only read it (plan)."""
    try:
        exists(url, options)
    except StorageError:
        raise
    except Exception as error:  # noqa: BLE001 - any failure here means the same thing to the user
        no_credentials = missing_credentials(url, error)
        raise StorageError(no_credentials or f"{url} cannot be read: {_cause(error)}") from error


def object_version(info: dict[str, Any]) -> str:
    """One version of an object from what a listing or HEAD already says: version id or ETag, else size + mtime."""
    for name in VERSION_FIELDS:
        if info.get(name):
            return f"{name}={str(info[name]).strip(chr(34))}"
    modified = next((info[name] for name in MODIFIED_FIELDS if info.get(name)), None)
    return f"size={info.get('size')},modified={modified}"


def versions(urls: Iterable[str], options: dict[str, Any] | None = None) -> dict[str, str | None]:
    """url -> object_version for many objects, HEADs in parallel; None where an object cannot be looked up."""

    def one(url: str) -> str | None:
        try:
            fs, path = filesystem(url, options)
            fs.invalidate_cache(path)  # s3fs answers info() from earlier listings of this process otherwise
            return object_version(retrying(lambda: fs.info(path), options))
        except Exception:  # noqa: BLE001 - a missing or unreadable image fails later, when it is fetched
            return None

    unique = list(dict.fromkeys(urls))
    if not unique:
        return {}
    with ThreadPoolExecutor(min(INFO_THREADS, len(unique))) as pool:
        return dict(zip(unique, pool.map(one, unique), strict=True))
