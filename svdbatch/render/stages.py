"""The generation actor's stages over pyarrow Tables: items -> images -> frames -> MP4s written -> metadata rows
(``RenderVideos``, the whole way in one process); the feed's stages before them are feed.py's.

A stage with settings is a class that receives the validated job spec (and what else it needs) once, in its
constructor, on the driver; calling it on a batch does the work, so a unit test calls it directly and Ray ships it
to every task once. Rows that already failed pass through untouched so they land in the table as dead letters.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa

from svdbatch import storage
from svdbatch.items.metadata import (
    METADATA_SCHEMA,
    OK,
    REJECTED,
    SHARD_INPUT_SCHEMA,
    fail,
    to_rows,
    to_table,
)
from svdbatch.render import quality
from svdbatch.render.images import ImageError, load_image
from svdbatch.render.video import codec_name, encode_mp4
from svdbatch.spec.config import JobSpec


def _describe(error: Exception) -> str:
    if isinstance(error, FileNotFoundError):
        return "not found"
    if isinstance(error, PermissionError):
        return "permission denied"
    return f"{type(error).__name__}: {error}"


class LoadImages:
    """Fetch each item's image through fsspec and fit it to the item's size; variants share one fetch."""

    def __init__(self, spec: JobSpec):
        self.spec = spec

    def __call__(self, batch: pa.Table) -> pa.Table:
        return _load_images(batch, self.spec)


def _load_images(batch: pa.Table, spec: JobSpec) -> pa.Table:
    rows = to_rows(batch)
    fetched: dict[str, bytes | Exception] = {}
    for row in rows:
        if row["status"] != OK:
            continue
        started = time.perf_counter()
        uri = row["source_uri"]
        if uri not in fetched:
            try:
                fetched[uri] = storage.read_bytes(uri, spec.storage_options)
            except Exception as error:  # noqa: BLE001 - any fetch failure is this row's problem only
                fetched[uri] = error
        data = fetched[uri]
        if isinstance(data, Exception):
            fail(row, f"image {uri!r} (key {row['key']!r}): {_describe(data)}")
            continue
        try:
            image = load_image(data, row["width"], row["height"], row["fit"], spec.images.max_pixels)
        except ImageError as error:
            fail(row, f"image {uri!r} (key {row['key']!r}): {error}")
            continue
        row.update(
            image=image.tobytes(),
            source_sha256=hashlib.sha256(data).hexdigest(),
            load_seconds=time.perf_counter() - started,
        )
    return to_table(rows)


class WriteVideos:
    """Measure quality, encode frames to MP4, write them at their final key, and emit the metadata rows.

    The payload is dropped, except the MP4 and the fitted image when a shard stage follows.
    """

    def __init__(self, spec: JobSpec):
        self.spec = spec

    def __call__(self, batch: pa.Table) -> pa.Table:
        spec = self.spec
        rows = to_rows(batch)
        for row in rows:
            if row["status"] == OK:
                _write(row, spec)
            row.update(video_codec=codec_name(spec.video), finished_at=dt.datetime.now(dt.timezone.utc))
        return to_table(rows, SHARD_INPUT_SCHEMA if spec.output.shards.enabled else METADATA_SCHEMA)


def _write(row: dict[str, Any], spec: JobSpec) -> None:
    shape = (row["height"], row["width"], 3)
    frames = np.frombuffer(row["frames"], dtype=np.uint8).reshape(row["num_frames"], *shape)
    row.update(quality.measure(frames, np.frombuffer(row["image"], np.uint8).reshape(shape), row["nonfinite_frames"]))
    reason = quality.rejection(row, spec.quality.model_dump())
    if reason:
        row.update(status=REJECTED, error=reason)
    started = time.perf_counter()
    try:
        data = encode_mp4(frames, row["fps"], spec.video)
    except Exception as error:  # noqa: BLE001 - one bad encode is one error row
        fail(row, f"encode {row['key']!r} v{row['variant']}: {_describe(error)}")
        return
    encoded = time.perf_counter()
    uri = row["video_uri"]
    try:
        storage.write_bytes(uri, data, spec.storage_options)
    except Exception as error:  # noqa: BLE001 - one failed upload is one error row
        fail(row, f"write {uri!r}: {_describe(error)}")
        return
    row.update(
        video=data if spec.output.shards.enabled and row["status"] == OK else None,
        bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        encode_seconds=encoded - started,
        write_seconds=time.perf_counter() - encoded,
    )


class RenderVideos:
    """One item's whole way from image to committed-ready row, in one process: load, generate, write.

    Frames never leave the process that made them (44 MB per SVD-XT video): only the metadata row (and, for shards,
    the MP4) goes back through the object store, so memory does not grow with the queue behind a slow writer, and a
    row reaches the driver as soon as its video is written. Several calls may run at once on one instance (threads):
    the device lock lets exactly one of them generate while the others load images or encode and write videos.
    """

    def __init__(self, spec: JobSpec, generate: Callable[[pa.Table], pa.Table]):
        self.load = LoadImages(spec)
        self.generate = generate
        self.write = WriteVideos(spec)
        self.device_lock = threading.Lock()

    def __call__(self, batch: pa.Table) -> pa.Table:
        loaded = self.load(batch)
        with self.device_lock:
            generated = self.generate(loaded)
        return self.write(generated)
