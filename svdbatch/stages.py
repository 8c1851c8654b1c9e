"""The CPU stages as plain functions over pyarrow Tables: manifest rows -> items -> images ... -> metadata rows.

Each takes the job spec as a plain dict (what Ray ships to workers) and can be called directly in a unit test.
Rows that already failed pass through untouched so they land in the table as dead letters.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from collections import Counter
from typing import Any

import numpy as np
import pyarrow as pa

from svdbatch import storage
from svdbatch.config import JobSpec
from svdbatch.images import ImageError, load_image
from svdbatch.items import check_uri, expand_row, plan_category
from svdbatch.metadata import METADATA_SCHEMA, OK, SKIPPED, fail, to_rows, to_table
from svdbatch.video import codec_name, encode_mp4


def _describe(error: Exception) -> str:
    if isinstance(error, FileNotFoundError):
        return "not found"
    if isinstance(error, PermissionError):
        return "permission denied"
    return f"{type(error).__name__}: {error}"


def source_versions(rows: list[dict[str, Any]], job: JobSpec) -> dict[str, str | None]:
    """The version of each allowed image these rows name, looked up in parallel (rows that carry one are not)."""
    uris = [
        row.get(job.manifest.image_column) for row in rows if row.get(job.manifest.version_column) is None
    ]
    allowed = [uri for uri in uris if isinstance(uri, str) and uri.strip() and check_uri(uri, job) is None]
    return storage.versions(allowed, job.storage_options)


def _expand(batch: pa.Table, spec: dict[str, Any], run: dict[str, Any]) -> list[dict[str, Any]]:
    job = JobSpec.model_validate(spec)
    rows = batch.to_pylist()
    identities = {"model": run["model_identity"], "sources": source_versions(rows, job)}
    items = []
    for row in rows:
        items.extend(
            expand_row(row, job, run["run_id"], job.output.url, run["previous"], run["duplicates"], identities)
        )
    return items


def expand_rows(batch: pa.Table, spec: dict[str, Any], run: dict[str, Any]) -> pa.Table:
    """Manifest rows -> the work rows to render (and error rows), ``variants`` per row; done items are dropped.

    ``run`` holds what the driver learnt before starting: run_id, previous (committed state), duplicates (keys),
    model_identity.
    """
    return to_table([item for item in _expand(batch, spec, run) if item["status"] != SKIPPED])


def tally_items(batch: pa.Table, spec: dict[str, Any], run: dict[str, Any]) -> pa.Table:
    """The plan: how many items of these rows are new, done, changed, to retry or invalid."""
    counts = Counter(plan_category(item) for item in _expand(batch, spec, run))
    return pa.table({"category": list(counts), "items": list(counts.values())})


def load_images(batch: pa.Table, spec: dict[str, Any]) -> pa.Table:
    """Fetch each item's image through fsspec and fit it to the item's size; variants share one fetch."""
    job = JobSpec.model_validate(spec)
    rows = to_rows(batch)
    fetched: dict[str, bytes | Exception] = {}
    for row in rows:
        if row["status"] != OK:
            continue
        started = time.perf_counter()
        uri = row["source_uri"]
        if uri not in fetched:
            try:
                fetched[uri] = storage.read_bytes(uri, job.storage_options)
            except Exception as error:  # noqa: BLE001 - any fetch failure is this row's problem only
                fetched[uri] = error
        data = fetched[uri]
        if isinstance(data, Exception):
            fail(row, f"image {uri!r} (key {row['key']!r}): {_describe(data)}")
            continue
        try:
            image = load_image(data, row["width"], row["height"], row["fit"], job.images.max_pixels)
        except ImageError as error:
            fail(row, f"image {uri!r} (key {row['key']!r}): {error}")
            continue
        row.update(
            image=image.tobytes(),
            source_sha256=hashlib.sha256(data).hexdigest(),
            load_seconds=time.perf_counter() - started,
        )
    return to_table(rows)


def write_videos(batch: pa.Table, spec: dict[str, Any]) -> pa.Table:
    """Encode frames to MP4, write them at their final key, and emit the metadata rows (payload dropped)."""
    job = JobSpec.model_validate(spec)
    rows = to_rows(batch)
    for row in rows:
        if row["status"] == OK:
            _write(row, job)
        row.update(video_codec=codec_name(job.video), finished_at=dt.datetime.now(dt.timezone.utc))
    return to_table(rows, METADATA_SCHEMA)


def _write(row: dict[str, Any], job: JobSpec) -> None:
    frames = np.frombuffer(row["frames"], dtype=np.uint8).reshape(row["num_frames"], row["height"], row["width"], 3)
    started = time.perf_counter()
    try:
        data = encode_mp4(frames, row["fps"], job.video)
    except Exception as error:  # noqa: BLE001 - one bad encode is one error row
        fail(row, f"encode {row['key']!r} v{row['variant']}: {_describe(error)}")
        return
    encoded = time.perf_counter()
    uri = row["video_uri"]
    try:
        storage.write_bytes(uri, data, job.storage_options)
    except Exception as error:  # noqa: BLE001 - one failed upload is one error row
        fail(row, f"write {uri!r}: {_describe(error)}")
        return
    row.update(
        bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        encode_seconds=encoded - started,
        write_seconds=time.perf_counter() - encoded,
    )
