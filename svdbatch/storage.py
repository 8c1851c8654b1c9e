"""fsspec URLs in one place: local paths and s3/gs/az URLs are read and written the same way.

Writes are atomic from a reader's point of view: a local file is written beside its final name and renamed; an
object store PUT only becomes visible once complete.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import fsspec
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem

EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "az": "azure", "abfs": "azure", "abfss": "azure"}


class StorageError(RuntimeError):
    """A URL that cannot be used, phrased for the user."""


def scheme(url: str) -> str:
    head, sep, _ = url.partition("://")
    return head.lower() if sep else "file"


def filesystem(url: str, options: dict[str, Any] | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem for a URL and the path inside it; a missing client names the extra to install."""
    try:
        return url_to_fs(url, **(options or {}))
    except ImportError:
        extra = EXTRAS.get(scheme(url))
        hint = f"pip install 'svdbatch[{extra}]'" if extra else "install its fsspec implementation"
        raise StorageError(f"{url}: no client for {scheme(url)}:// URLs; {hint}") from None
    except ValueError as error:
        raise StorageError(f"{url}: {error}") from None


def is_local(url: str, options: dict[str, Any] | None = None) -> bool:
    return isinstance(filesystem(url, options)[0], LocalFileSystem)


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *(part.strip("/") for part in parts)])


def read_bytes(url: str, options: dict[str, Any] | None = None) -> bytes:
    fs, path = filesystem(url, options)
    return fs.cat_file(path)


def size(url: str, options: dict[str, Any] | None = None) -> int:
    fs, path = filesystem(url, options)
    return fs.size(path)


def write_bytes(url: str, data: bytes, options: dict[str, Any] | None = None) -> None:
    fs, path = filesystem(url, options)
    if isinstance(fs, LocalFileSystem):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        partial = f"{path}.partial-{uuid.uuid4().hex}"
        try:
            with open(partial, "wb") as handle:
                handle.write(data)
            os.replace(partial, path)
        finally:
            if os.path.exists(partial):
                os.remove(partial)
        return
    fs.pipe_file(path, data)


def exists(url: str, options: dict[str, Any] | None = None) -> bool:
    fs, path = filesystem(url, options)
    return fs.exists(path)


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
        raise StorageError(f"output {url} is not writable: {type(error).__name__}: {error}") from None
