"""Object-store helpers without a store: which errors are worth a retry, and the retry budget."""

from __future__ import annotations

import errno

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError
from s3fs.errors import translate_boto_error

from svdbatch import storage


def _client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
                       "GetObject")


@pytest.mark.parametrize(
    ("code", "status", "transient"),
    [
        ("SlowDown", 503, True),
        ("InternalError", 500, True),
        ("RequestTimeout", 400, True),
        ("ThrottlingException", 400, True),
        ("SomethingNew", 502, True),
        ("NoSuchKey", 404, False),
        ("AccessDenied", 403, False),
        ("InvalidRequest", 400, False),
    ],
)
def test_s3_errors_are_classified_by_code_and_status_as_s3fs_raises_them(code, status, transient):
    """s3fs turns the client's error into an OSError and keeps the ClientError as its cause."""
    error = _client_error(code, status)
    assert storage.is_transient(error) is transient
    assert storage.is_transient(translate_boto_error(error)) is transient


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (EndpointConnectionError(endpoint_url="http://s3"), True),
        (ReadTimeoutError(endpoint_url="http://s3"), True),
        (ConnectionResetError(), True),
        (TimeoutError(), True),
        (OSError(errno.ETIMEDOUT, "timed out"), True),
        (FileNotFoundError("a 503 in the name does not make it transient"), False),
        (ValueError("HTTP 503 mentioned in a message is not a status"), False),
        (OSError(errno.EIO, "unknown"), False),
    ],
)
def test_connection_errors_and_errnos(error, transient):
    assert storage.is_transient(error) is transient


def test_retrying_retries_transient_errors_and_gives_up_on_permanent_ones(monkeypatch):
    monkeypatch.setattr(storage.retry, "BACKOFF_S", 0.0)
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise translate_boto_error(_client_error("SlowDown", 503))
        return "ok"

    assert storage.retrying(flaky) == "ok" and len(calls) == 3

    def missing():
        calls.append(1)
        raise FileNotFoundError("gone")

    calls.clear()
    with pytest.raises(FileNotFoundError):
        storage.retrying(missing)
    assert len(calls) == 1
