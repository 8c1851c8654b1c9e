"""fsspec URLs in one place: local paths and s3/gs/az URLs are read and written the same way.

Writes are atomic from a reader's point of view: a local file is written beside its final name and renamed; an
object store PUT only becomes visible once complete.
"""

from __future__ import annotations

import errno
import os
import random
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import fsspec
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem

from svdbatch.errors import UserError

EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "az": "azure", "abfs": "azure", "abfss": "azure"}


T = TypeVar("T")
ATTEMPTS = 6
BACKOFF_S = 0.2
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


def retrying(action: Callable[[], T], attempts: int = ATTEMPTS) -> T:
    """Run an object-store call with exponential backoff and jitter; a bounded budget, then the last error."""
    for attempt in range(attempts):
        try:
            return action()
        except Exception as error:  # noqa: BLE001 - classified just below
            if attempt == attempts - 1 or not is_transient(error):
                raise
            time.sleep(BACKOFF_S * 2**attempt * (0.5 + random.random()))
    raise AssertionError("unreachable")


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
        return url_to_fs(url, **(options or {}))
    except ImportError as error:
        extra = EXTRAS.get(scheme(url))
        hint = f"pip install 'svdbatch[{extra}]'" if extra else "install its fsspec implementation"
        raise StorageError(f"{url}: no client for {scheme(url)}:// URLs; {hint}") from error
    except ValueError as error:
        raise StorageError(f"{url}: {error}") from error


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *(part.strip("/") for part in parts)])


def read_bytes(url: str, options: dict[str, Any] | None = None) -> bytes:
    fs, path = filesystem(url, options)
    return retrying(lambda: fs.cat_file(path))


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
    retrying(lambda: fs.pipe_file(path, data))


def exists(url: str, options: dict[str, Any] | None = None) -> bool:
    fs, path = filesystem(url, options)
    return retrying(lambda: fs.exists(path))


def delete(url: str, options: dict[str, Any] | None = None) -> None:
    """Remove an object; one already gone is fine."""
    fs, path = filesystem(url, options)
    try:
        retrying(lambda: fs.rm(path))
    except FileNotFoundError:
        pass


def check_writable(url: str, options: dict[str, Any] | None = None) -> None:
    """Fail fast, before any GPU work, when the output cannot be written."""
    probe = join(url, "_job", f".write-check-{uuid.uuid4().hex}")
    try:
        write_bytes(probe, b"ok", options)
        fs, path = filesystem(probe, options)
        fs.rm(path)
    except StorageError:
        raise
    except Exception as error:  # noqa: BLE001 - any failure here means the same thing to the user
        raise StorageError(f"output {url} is not writable: {type(error).__name__}: {error}") from error


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
            return object_version(retrying(lambda: fs.info(path)))
        except Exception:  # noqa: BLE001 - a missing or unreadable image fails later, when it is fetched
            return None

    unique = list(dict.fromkeys(urls))
    if not unique:
        return {}
    with ThreadPoolExecutor(min(INFO_THREADS, len(unique))) as pool:
        return dict(zip(unique, pool.map(one, unique), strict=True))
