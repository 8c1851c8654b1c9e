"""Deadlines of object-store calls without a store: the options each backend gets, the retry budget in seconds,
the bound on the checks before any work, and the one line that names an unreachable store."""

from __future__ import annotations

import socket
import time

import pytest

from svdbatch import storage
from svdbatch.spec.config import SpecError
from svdbatch.spec.load import build_spec

REFUSED = ConnectionRefusedError(111, "Connection refused")


def test_each_backend_gets_the_deadlines_in_its_own_words_and_the_users_values_win():
    options = {"key": "k", "read_timeout_s": 7, "config_kwargs": {"read_timeout": 99}}
    s3 = storage.backend_options("s3://b/x", options)
    assert "read_timeout_s" not in s3 and s3["key"] == "k"
    assert s3["config_kwargs"] == {
        "connect_timeout": 10.0, "read_timeout": 99, "retries": {"total_max_attempts": 1, "mode": "standard"}
    }
    assert storage.backend_options("gs://b/x", {"read_timeout_s": 7}) == {"timeout": 17.0}
    azure = storage.backend_options("az://c/x", {"connect_timeout_s": 3})
    assert azure == {"connection_timeout": 3.0, "read_timeout": 30.0, "retry_total": 0}
    http = storage.backend_options("https://example.com/x", {})["client_kwargs"]["timeout"]
    assert (http.sock_connect, http.sock_read) == (10.0, 30.0)
    assert storage.backend_options("/tmp/x", {"retry_budget_s": 5, "auto_mkdir": True}) == {"auto_mkdir": True}


def test_s3fs_keeps_no_retry_loop_of_its_own():
    fs, _ = storage.filesystem("s3://bucket/x", {"key": "k", "secret": "s"})
    assert fs.retries == 1 and fs.config_kwargs["retries"]["total_max_attempts"] == 1


def test_retries_end_within_the_budget_in_seconds_and_name_the_endpoint():
    options = {"connect_timeout_s": 0.1, "read_timeout_s": 0.1, "retry_budget_s": 1.0,
               "client_kwargs": {"endpoint_url": "http://127.0.0.1:9"}}
    calls = []

    def refused():
        calls.append(time.monotonic())
        raise REFUSED

    started = time.monotonic()
    with pytest.raises(storage.StoreUnreachable) as caught:
        storage.retrying(refused, options, "s3://bucket/out", attempts=100)
    assert time.monotonic() - started < 1.0 and len(calls) > 1
    assert str(caught.value).startswith("s3://bucket/out: http://127.0.0.1:9: cannot connect")
    with pytest.raises(FileNotFoundError):  # not worth a retry: raised at once, as it was
        storage.retrying(lambda: (calls.append(0), open("/nonexistent/x"))[1], options, "s3://bucket/out")


def test_an_enclosing_deadline_tightens_the_budget():
    options = {"connect_timeout_s": 0.2, "read_timeout_s": 0.2, "retry_budget_s": 60}
    started = time.monotonic()
    with storage.deadline(0.5), pytest.raises(ConnectionRefusedError):
        storage.retrying(lambda: (_ for _ in ()).throw(REFUSED), options, attempts=100)
    assert time.monotonic() - started < 0.6


def test_a_check_stuck_inside_a_client_is_left_behind_and_its_store_named(monkeypatch):
    monkeypatch.setattr(storage.retry, "GRACE_S", 0.2)
    options = {"key": "k", "secret": "s", "client_kwargs": {"endpoint_url": "http://10.0.0.1:9000"}}

    def stuck():
        storage.filesystem("s3://bucket/manifest.parquet", options)
        time.sleep(30)

    started = time.monotonic()
    with pytest.raises(storage.StoreUnreachable) as caught:
        storage.within(stuck, options, seconds=0.5)
    assert time.monotonic() - started < 2
    assert str(caught.value).startswith("s3://bucket/manifest.parquet: http://10.0.0.1:9000: no answer in 0.7 s")
    assert storage.within(lambda: 42, options) == 42
    with pytest.raises(KeyError):
        storage.within(lambda: {}["missing"], options)


def test_a_whole_upload_is_bounded_for_async_backends_only():
    s3, _ = storage.filesystem("s3://bucket/x", {"key": "k", "secret": "s"})
    local, _ = storage.filesystem("/tmp/x")
    assert storage.whole_call(s3, {}) == {"timeout": 120.0}
    assert storage.whole_call(local, {}) == {}
    with storage.deadline(5):
        assert storage.whole_call(s3, {})["timeout"] <= 5


def test_timeouts_and_missing_credentials_read_as_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    line = storage.unreachable("s3://b/o", {"client_kwargs": {"endpoint_url": "http://h:1"}}, socket.timeout(), 31)
    assert line.startswith("s3://b/o: http://h:1: no answer in 30 s (gave up after 31 s")
    assert "read_timeout_s" in line and "\n" not in line
    gs = storage.unreachable("gs://b/o", {}, REFUSED, 2)
    assert "https://storage.googleapis.com: cannot connect" in gs and "GOOGLE_APPLICATION_CREDENTIALS" in gs

    class NoCredentialsError(Exception):
        pass

    assert storage.missing_credentials("s3://b/o", NoCredentialsError()).startswith(
        "no credentials for s3://b/o: set AWS_ACCESS_KEY_ID"
    )
    assert storage.missing_credentials("s3://b/o", ValueError("other")) is None


@pytest.mark.parametrize("value", [0, -1, "soon", True])
def test_a_bad_deadline_in_the_spec_is_one_line(value):
    with pytest.raises(SpecError, match="storage_options.read_timeout_s must be a positive number of seconds"):
        build_spec({"manifest": {"path": "m.parquet"}, "output": {"url": "o"},
                    "storage_options": {"read_timeout_s": value}})
