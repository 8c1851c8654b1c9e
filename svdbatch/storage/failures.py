"""Which store failures a retry may cure (``is_transient``), and the one line a failure is reported in: the store's
endpoint, what happened, for how long, and what to set when credentials are missing.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from typing import Any

from svdbatch.errors import UserError
from svdbatch.storage.options import AZURE_SCHEMES, GCS_SCHEMES, HTTP_SCHEMES, S3_SCHEMES, Deadlines, scheme


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
    text = cause(error)
    if _is_timeout(error):
        return (
            f"{where}: no answer in {limits.read_timeout_s:g} s (gave up after {waited_s:.0f} s; {text})"
            f"{credentials_hint(url)}; check the endpoint, the network route and the firewall, or raise "
            "storage_options.read_timeout_s"
        )
    if _is_refused(error):
        return f"{where}: cannot connect ({text}){credentials_hint(url)}; is the store running at that address?"
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


def credentials_hint(url: str) -> str:
    """For gs:// URLs with no credentials file anywhere gcsfs looks: say so, it is the usual day-one cause."""
    if scheme(url) not in GCS_SCHEMES or os.environ.get("GOOGLE_APPLICATION_CREDENTIALS"):
        return ""
    default = os.path.expanduser("~/.config/gcloud/application_default_credentials.json")
    if os.path.exists(default):
        return ""
    return f"; and no Google credentials were found: {CREDENTIALS['gs']}"


def cause(error: BaseException) -> str:
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
