"""What ``storage_options`` say: svdbatch's own deadlines (``DEADLINES``), read into ``Deadlines``, and each backend's
options with them in its own words (``backend_options``); which backend a URL names; the options as logs show them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# svdbatch's own keys of storage_options, with their defaults: per request (a large upload is many requests, each
# with its own deadline), chosen for real clouds, where a first byte takes well under a second.
DEADLINES = {"connect_timeout_s": 10.0, "read_timeout_s": 30.0, "retry_budget_s": 120.0}
S3_SCHEMES = ("s3", "s3a")
GCS_SCHEMES = ("gs", "gcs")
AZURE_SCHEMES = ("az", "abfs", "abfss")
HTTP_SCHEMES = ("http", "https")
SECRET_WORDS = ("secret", "password", "token", "key", "credential", "sas", "signature")


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


def scheme(url: str) -> str:
    head, sep, _ = url.partition("://")
    return head.lower() if sep else "file"


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
