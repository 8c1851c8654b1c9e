"""The commit record: what is done, what to skip on a rerun, and the one-row-per-item metadata table.

An item is committed when its video is written and its metadata row is in a commit file under
``{output}/_commits/``. The driver writes those files as finished rows stream back, every few seconds, each file
atomically; a killed driver loses at most the rows of its last interval (their videos are simply rendered again, to
the same key). At the end of a run the commit files are compacted into ``{output}/metadata/metadata.parquet``: the
latest row per (key, variant), published with one atomic write, so its readers never see duplicates or a row
whose video is missing.

Ray Data's own checkpointing (``DataContext.checkpoint_config``) skips rows by an id column only: it would keep
an item whose spec changed and count error rows as done, so svdbatch keeps this record itself.
"""

from __future__ import annotations

import datetime as dt
import io
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from svdbatch import storage
from svdbatch.items import RESUME_COLUMNS, item_id
from svdbatch.metadata import ERROR, METADATA_SCHEMA, OK, REMOVED, SKIPPED

COMMITS = "_commits"
TABLE = "metadata/metadata.parquet"
COMMIT_INTERVAL_S = 5.0
COMMIT_MAX_ROWS = 2000
MIN_ITEMS_BEFORE_ABORT = 20
DELETE_THREADS = 16


class TooManyErrors(RuntimeError):
    """More items failed than the job allows (failures.max_error_fraction)."""


def _read_parquet_files(url: str, options: dict[str, Any]) -> list[pa.Table]:
    fs, path = storage.filesystem(url, options)
    if not fs.exists(path):
        return []
    names = [path] if fs.isfile(path) else sorted(name for name in fs.find(path) if name.endswith(".parquet"))
    tables = []
    for name in names:
        with fs.open(name, "rb") as handle:
            tables.append(_conform(pq.read_table(handle)))
    return tables


def _conform(table: pa.Table) -> pa.Table:
    """A table written by an older svdbatch gets the columns added since as nulls."""
    for name in METADATA_SCHEMA.names:
        if name not in table.column_names:
            table = table.append_column(name, pa.nulls(table.num_rows, METADATA_SCHEMA.field(name).type))
    return table.select(METADATA_SCHEMA.names).cast(METADATA_SCHEMA)


def read_rows(output: str, options: dict[str, Any] | None = None) -> pa.Table:
    """Every recorded row: the published table plus the commit files of runs not yet compacted."""
    tables = _read_parquet_files(storage.join(output, TABLE), options or {})
    tables += _read_parquet_files(storage.join(output, COMMITS), options or {})
    return pa.concat_tables(tables) if tables else METADATA_SCHEMA.empty_table()


def latest_rows(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (key, variant): the most recent. Rows without a usable key are kept per run and source."""
    latest: dict[Any, dict[str, Any]] = {}
    for row in rows:
        if row["status"] not in (OK, ERROR, REMOVED):
            continue
        ident = item_id(row["key"], row["variant"]) if row["key"] else (row["run_id"], row["source_uri"], row["key"])
        current = latest.get(ident)
        if current is None or (row["finished_at"], row["run_id"]) >= (current["finished_at"], current["run_id"]):
            latest[ident] = row
    return sorted(latest.values(), key=lambda row: (row["key"] or "", row["variant"] or 0))


def previous_state(output: str, options: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """item id -> its latest row's ``RESUME_COLUMNS``, for the expand stage to decide what to skip."""
    rows = latest_rows(read_rows(output, options).to_pylist())
    return {
        item_id(row["key"], row["variant"]): {name: row[name] for name in RESUME_COLUMNS} for row in rows if row["key"]
    }


def to_remove(output: str, keys: pa.ChunkedArray, options: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Latest rows whose key is no longer in the manifest (``keys``), not already removed."""
    rows = pa.Table.from_pylist(latest_rows(read_rows(output, options).to_pylist()), schema=METADATA_SCHEMA)
    listed = pc.is_in(rows["key"], value_set=keys.combine_chunks())
    gone = pc.and_(pc.invert(listed), pc.not_equal(rows["status"], REMOVED))
    return rows.filter(pc.fill_null(gone, False)).to_pylist()


def prune(output: str, keys: pa.ChunkedArray, run_id: str, options: dict[str, Any] | None = None) -> pa.Table:
    """Delete the videos of keys that left the manifest; return their rows marked ``removed`` (to commit)."""
    rows = to_remove(output, keys, options)

    def delete(row: dict[str, Any]) -> None:
        if row["video_uri"]:
            storage.delete(row["video_uri"], options)

    with ThreadPoolExecutor(DELETE_THREADS) as pool:
        list(pool.map(delete, rows))
    now = dt.datetime.now(dt.timezone.utc)
    for row in rows:
        row.update(run_id=run_id, status=REMOVED, video_uri=None, error=None, rerender_reason=None, finished_at=now)
    return pa.Table.from_pylist(rows, schema=METADATA_SCHEMA)


def publish(output: str, options: dict[str, Any] | None = None) -> pa.Table:
    """Compact every row into the metadata table, written atomically, then drop the compacted commit files."""
    fs, commits = storage.filesystem(storage.join(output, COMMITS), options or {})
    compacted = [name for name in fs.find(commits) if name.endswith(".parquet")] if fs.exists(commits) else []
    table = pa.Table.from_pylist(latest_rows(read_rows(output, options).to_pylist()), schema=METADATA_SCHEMA)
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    storage.write_bytes(storage.join(output, TABLE), buffer.getvalue(), options)
    for name in compacted:
        fs.rm(name)
    return table


@dataclass
class Counts:
    rendered: int = 0
    failed: int = 0
    skipped: int = 0
    rerendered: int = 0
    removed: int = 0
    errors: list[str] = field(default_factory=list)


class Committer:
    """Receives finished rows on the driver, counts them, and writes them out as commit files."""

    def __init__(self, output: str, run_id: str, options: dict[str, Any], max_error_fraction: float):
        self.output = output
        self.run_id = run_id
        self.options = options
        self.max_error_fraction = max_error_fraction
        self.counts = Counts()
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._files = 0
        self._last_flush = time.monotonic()

    def add(self, batch: pa.Table) -> None:
        for row in batch.select(["status", "error", "rerender_reason"]).to_pylist():
            if row["status"] == SKIPPED:
                self.counts.skipped += 1
                continue
            if row["status"] == OK:
                self.counts.rendered += 1
            else:
                self.counts.failed += 1
                if len(self.counts.errors) < 5:
                    self.counts.errors.append(row["error"])
            if row["rerender_reason"]:
                self.counts.rerendered += 1
        kept = batch.filter(pa.compute.not_equal(batch["status"], SKIPPED))
        if kept.num_rows:
            self._pending.append(kept.select(METADATA_SCHEMA.names).cast(METADATA_SCHEMA))
            self._pending_rows += kept.num_rows
        if self._pending_rows >= COMMIT_MAX_ROWS or time.monotonic() - self._last_flush >= COMMIT_INTERVAL_S:
            self.flush()
        self._check_errors()

    def add_removed(self, rows: pa.Table) -> None:
        """Commit the rows ``prune`` marked removed."""
        self.counts.removed += rows.num_rows
        if rows.num_rows:
            self._pending.append(rows)
            self._pending_rows += rows.num_rows
            self.flush()

    def _check_errors(self, minimum: int = MIN_ITEMS_BEFORE_ABORT) -> None:
        done = self.counts.rendered + self.counts.failed
        if done and done >= minimum and self.counts.failed / done > self.max_error_fraction:
            self.flush()
            raise TooManyErrors(
                f"{self.counts.failed} of {done} items failed, more than failures.max_error_fraction="
                f"{self.max_error_fraction}; first error: {self.counts.errors[0]}"
            )

    def flush(self) -> None:
        self._last_flush = time.monotonic()
        if not self._pending:
            return
        buffer = io.BytesIO()
        pq.write_table(pa.concat_tables(self._pending), buffer)
        name = f"{self.run_id}-{self._files:06d}.parquet"
        storage.write_bytes(storage.join(self.output, COMMITS, name), buffer.getvalue(), self.options)
        self._files += 1
        self._pending, self._pending_rows = [], 0

    def finish(self) -> None:
        """Flush, and apply the error budget to the whole run (small runs never reach the in-flight check)."""
        self.flush()
        self._check_errors(minimum=1)
