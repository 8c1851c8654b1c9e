"""The commit record: what is done, what to skip on a rerun, and the one-row-per-item metadata table.

An item is committed when its video is written and its metadata row is in a commit file under
``{output}/_commits/`` (the driver's ``committer.Committer`` writes them as finished rows stream back, every few
seconds, each file atomically; a killed driver loses at most the rows of its last interval, whose videos are simply
rendered again, to the same key).

The metadata table is ``{output}/metadata/bucket-NNNNN.parquet``: every item lives in the bucket
``sha256(key) mod BUCKETS``, and each bucket file holds the latest row per (key, variant) of its items. Publishing a
run merges its commit files into the buckets its rows fall in, each bucket rewritten with one atomic write, so the
cost follows the rows of the run, not the size of the table, and a reader never sees duplicates. A table of an
older format (svdbatch/formats.py: table 1) is split into buckets by the first publish.

Ray Data's own checkpointing (``DataContext.checkpoint_config``) skips rows by an id column only: it would keep
an item whose spec changed and count error rows as done, so svdbatch keeps this record itself.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from svdbatch import formats, storage
from svdbatch.items.metadata import ERROR, METADATA_SCHEMA, OK, REJECTED, REMOVED, conform
from svdbatch.render.shards import SHARDS, reconcile

COMMITS = "_commits"
METADATA = "metadata"
BUCKETS = 256


def bucket_of(key: str | None) -> int:
    """The bucket file an item's row lives in: stable across runs, versions and machines."""
    digest = hashlib.sha256((key or "").encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:4], "big") % BUCKETS


def bucket_path(output: str, bucket: int) -> str:
    return storage.join(output, METADATA, f"bucket-{bucket:05d}.parquet")


def item_ids(table: pa.Table) -> pa.Array:
    """``items.item_id`` for every row, computed by Arrow; null where the key is null."""
    variant = pc.cast(table["variant"], pa.string())
    return pc.binary_join_element_wise(table["key"], variant, "\0").combine_chunks()


def latest(table: pa.Table) -> pa.Table:
    """One row per (key, variant): the most recent. Rows without a usable key are kept per run and source."""
    table = table.filter(pc.is_in(table["status"], pa.array([OK, ERROR, REJECTED, REMOVED])))
    keyless = pc.binary_join_element_wise("\1", table["run_id"], table["source_uri"], "\0")
    ident = pc.coalesce(item_ids(table), keyless.combine_chunks())
    order = pc.sort_indices(
        pa.table({"i": ident, "f": table["finished_at"], "r": table["run_id"]}),
        sort_keys=[("i", "ascending"), ("f", "ascending"), ("r", "ascending")],
    )
    table, ident = table.take(order), ident.take(order)
    if table.num_rows == 0:
        return table
    last = pc.not_equal(ident.slice(0, len(ident) - 1), ident.slice(1))
    return table.filter(pa.concat_arrays([pc.fill_null(last, True), pa.array([True])]))


def _read(fs, path: str, columns: list[str] | None = None) -> pa.Table:
    """A table or commit file; read whole, it is conformed to today's schema (newer columns read as null)."""
    with fs.open(path, "rb") as handle:
        table = pq.read_table(handle, columns=columns)
    if columns is None:
        return conform(table)
    schema = pa.schema([METADATA_SCHEMA.field(name) for name in table.column_names])
    return table.cast(schema)


def _parquet_sizes(fs, path: str) -> dict[str, int]:
    """The Parquet files under a folder with their sizes, from one listing."""
    if not fs.exists(path):
        return {}
    found = fs.find(path, detail=True)
    return {name: info.get("size") or 0 for name, info in sorted(found.items()) if name.endswith(".parquet")}


def pending_files(output: str, options: dict[str, Any] | None = None) -> list[str]:
    """Commit files not yet merged into the table (a running job's, or a killed one's), as fsspec paths."""
    fs, path = storage.filesystem(storage.join(output, COMMITS), options or {})
    return list(storage.retrying(lambda: _parquet_sizes(fs, path), options))


@dataclass(frozen=True)
class StateFiles:
    """The files the committed state is read from, listed once: the table's (bucket files, or table 1's file,
    svdbatch/formats.py) and the pending commit files."""

    tables: list[str]
    pending: list[str]
    bytes: int  # their total size: how big the resume join's right side can be


def state_files(output: str, options: dict[str, Any] | None = None) -> StateFiles:
    sizes = []
    for folder in (METADATA, COMMITS):
        fs, path = storage.filesystem(storage.join(output, folder), options or {})
        sizes.append(storage.retrying(lambda fs=fs, path=path: _parquet_sizes(fs, path), options))
    return StateFiles(list(sizes[0]), list(sizes[1]), sum(sizes[0].values()) + sum(sizes[1].values()))


def read_rows(output: str, options: dict[str, Any] | None = None) -> pa.Table:
    """Every recorded row: the published table plus the commit files of runs not yet merged into it."""
    fs, _ = storage.filesystem(output, options or {})
    files = state_files(output, options)
    tables = [_read(fs, name) for name in files.tables + files.pending]
    return pa.concat_tables(tables) if tables else METADATA_SCHEMA.empty_table()


def publish(output: str, options: dict[str, Any] | None = None, shards: bool = False) -> int:
    """Merge the commit files (and a table 1, svdbatch/formats.py) into the buckets they touch; return how many.

    Each touched bucket is rewritten atomically with its latest rows; commit files are removed only afterwards, so
    a publish that is interrupted is simply done again by the next run. With shards (on now, or written by an
    earlier run) the shard folder is first reconciled with the commit files' rows (see ``shards.reconcile``).
    """
    options = options or {}
    fs, _ = storage.filesystem(output, options)
    pending = pending_files(output, options)
    _, table_1 = storage.filesystem(storage.join(output, formats.TABLE_1), options)
    has_table_1 = storage.retrying(lambda: fs.exists(table_1), options)
    tables = [storage.retrying(lambda name=name: _read(fs, name), options) for name in pending]
    if shards or storage.exists(storage.join(output, SHARDS), options):
        run_rows = pa.concat_tables(tables) if tables else METADATA_SCHEMA.empty_table()
        reconcile(output, run_rows, latest(run_rows).to_pylist(), options)
    if not tables and not has_table_1:
        return 0
    rows = pa.concat_tables(tables) if tables else METADATA_SCHEMA.empty_table()
    buckets = _buckets(rows)
    with tempfile.TemporaryDirectory(prefix="svdbatch-upgrade-") as staging:
        split = storage.retrying(lambda: _split_table_1(fs, table_1, staging), options) if has_table_1 else set()
        touched = sorted(set(pc.unique(buckets).to_pylist()) | split)
        for bucket in touched:
            mine = rows.filter(pc.equal(buckets, bucket))
            if bucket in split:
                with pa.ipc.open_stream(_staged(staging, bucket)) as stream:
                    mine = pa.concat_tables([stream.read_all(), mine])
            _merge_bucket(output, options, bucket, mine)
    if has_table_1:
        fs.rm(table_1)
    for name in pending:
        fs.rm(name)
    return len(touched)


def _buckets(rows: pa.Table) -> pa.Array:
    return pa.array([bucket_of(key) for key in rows["key"].to_pylist()], pa.int32())


def _staged(staging: str, bucket: int) -> str:
    return os.path.join(staging, f"{bucket}.arrows")


def _split_table_1(fs, path: str, staging: str) -> set[int]:
    """Table 1 (svdbatch/formats.py), split by bucket into local files a slice at a time: the driver holds one slice
    and one bucket, never the table. Arrow streams, as a Parquet writer keeps every row group's metadata until it
    closes (256 of them: gigabytes). Returns the buckets it holds rows of."""
    writers: dict[int, pa.ipc.RecordBatchStreamWriter] = {}
    compressed = pa.ipc.IpcWriteOptions(compression="zstd")
    try:
        for rows in map(conform, formats.table_1_slices(fs, path)):
            buckets = _buckets(rows)
            for bucket in pc.unique(buckets).to_pylist():
                if bucket not in writers:
                    writers[bucket] = pa.ipc.new_stream(_staged(staging, bucket), METADATA_SCHEMA, options=compressed)
                writers[bucket].write_table(rows.filter(pc.equal(buckets, bucket)))
    finally:
        for writer in writers.values():
            writer.close()
    return set(writers)


def _merge_bucket(output: str, options: dict[str, Any], bucket: int, rows: pa.Table) -> None:
    url = bucket_path(output, bucket)
    fs, path = storage.filesystem(url, options)
    if storage.retrying(lambda: fs.exists(path), options, url):
        rows = pa.concat_tables([storage.retrying(lambda: _read(fs, path), options, url), rows])
    merged = latest(rows)
    merged = merged.take(pc.sort_indices(merged, sort_keys=[("key", "ascending"), ("variant", "ascending")]))
    buffer = io.BytesIO()
    pq.write_table(merged, buffer)
    storage.write_bytes(url, buffer.getvalue(), options)
