"""fsspec URLs in one place: local paths and s3/gs/az URLs are read and written the same way.

Writes are atomic from a reader's point of view: a local file is written beside its final name and renamed; an
object store PUT only becomes visible once complete.

Every object-store call has a deadline. Three keys of ``storage_options`` are svdbatch's own (``DEADLINES``): a
connect and a read timeout, translated here into each backend's own options (s3fs/botocore, gcsfs, adlfs, http), and
a budget in seconds for ``retrying``. There is one retry layer: the backends' own retries are turned off (botocore
``total_max_attempts`` 1, s3fs ``retries`` 1, Azure ``retry_total`` 0) and ``retrying`` retries within the budget,
so the layers never multiply. A call therefore ends within its budget plus one attempt (connect + read timeout).
gcsfs alone retries 6 times by itself (fixed when its class is defined): a gs:// call can take up to ~6 attempts
plus ~31 s of its backoff before ``retrying`` sees it fail. ``deadline`` tightens the budget for a block of calls:
the pre-flight checks use it so an unreachable store is named in one line within a minute.

The parts: options.py (what storage_options say, per backend), retry.py (``retrying``, ``deadline``, ``within``),
failures.py (which failures a retry may cure, and the one line a failure is reported in). Every package imports
them from here.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import fsspec
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem

from svdbatch.storage.failures import (  # noqa: F401
    StorageError,
    StoreUnreachable,
    cause,
    is_transient,
    missing_credentials,
    unreachable,
)
from svdbatch.storage.options import DEADLINES, S3_SCHEMES, backend_options, redact, scheme  # noqa: F401
from svdbatch.storage.retry import PREFLIGHT_S, deadline, opened_urls, retrying, whole_call, within  # noqa: F401

EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "az": "azure", "abfs": "azure", "abfss": "azure"}
# Fields of fsspec's info() that name one version of an object, strongest first (S3/Azure, GCS, HTTP).
VERSION_FIELDS = ("VersionId", "version_id", "generation", "ETag", "etag", "md5Hash", "content_md5")
MODIFIED_FIELDS = ("mtime", "LastModified", "last_modified", "updated", "mtime_ns")
INFO_THREADS = 16


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
    opened = opened_urls.get()
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
        raise StorageError(no_credentials or f"output {url} is not writable: {cause(error)}") from error


def check_readable(url: str, options: dict[str, Any] | None = None) -> None:
    """Fail fast when a folder or object cannot be reached, for commands that only read it (plan)."""
    try:
        exists(url, options)
    except StorageError:
        raise
    except Exception as error:  # noqa: BLE001 - any failure here means the same thing to the user
        no_credentials = missing_credentials(url, error)
        raise StorageError(no_credentials or f"{url} cannot be read: {cause(error)}") from error


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
