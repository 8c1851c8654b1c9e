"""The driver's side of the commit record: it receives the finished rows, counts them (``Counts``, what the summary
and progress lines say), holds the run to its error budget, and writes the rows as commit files under
``{output}/_commits/`` every few seconds, each file whole or absent (``commit.publish`` merges them into the table).
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from svdbatch import storage
from svdbatch.errors import UserError
from svdbatch.estimate.learned import TIMING_COLUMNS, add_timing
from svdbatch.items.metadata import METADATA_SCHEMA, OK, REJECTED, SKIPPED, generated
from svdbatch.model.provenance import PROVENANCE_COLUMNS
from svdbatch.store.commit import COMMITS

COMMIT_INTERVAL_S = 5.0
COMMIT_MAX_ROWS = 2000
MIN_ITEMS_BEFORE_ABORT = 20


class TooManyErrors(UserError, RuntimeError):
    """More items failed than the job allows (failures.max_error_fraction)."""


@dataclass
class Counts:
    rendered: int = 0
    rejected: int = 0
    failed: int = 0
    skipped: int = 0
    rerendered: int = 0
    removed: int = 0
    generate_seconds: float = 0.0  # of the generated videos (ok, rejected): each one's share of its pipeline call
    errors: list[str] = field(default_factory=list)
    environments: list[dict[str, str]] = field(default_factory=list)  # distinct provenance of the rendered rows
    timings: dict[tuple, list] = field(default_factory=dict)  # learned.add_timing of the rendered rows


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
        columns = sorted({"status", "error", "rerender_reason", *PROVENANCE_COLUMNS, *TIMING_COLUMNS})
        for row in batch.select(columns).to_pylist():
            if row["status"] == SKIPPED:
                self.counts.skipped += 1
                continue
            environment = {name: row[name] for name in PROVENANCE_COLUMNS}
            if environment["gpu_name"] and environment not in self.counts.environments:
                self.counts.environments.append(environment)
            if row["status"] == OK:
                self.counts.rendered += 1
                add_timing(self.counts.timings, row)
            elif row["status"] == REJECTED:
                self.counts.rejected += 1
            else:
                self.counts.failed += 1
                if len(self.counts.errors) < 5:
                    self.counts.errors.append(row["error"])
            if row["rerender_reason"]:
                self.counts.rerendered += 1
        self.counts.generate_seconds += pc.sum(generated(batch)["generate_seconds"]).as_py() or 0.0
        kept = batch.filter(pa.compute.not_equal(batch["status"], SKIPPED))
        if kept.num_rows:
            self._pending.append(kept.select(METADATA_SCHEMA.names).cast(METADATA_SCHEMA))
            self._pending_rows += kept.num_rows
        if self._pending_rows >= COMMIT_MAX_ROWS or time.monotonic() - self._last_flush >= COMMIT_INTERVAL_S:
            self.flush()
        self._check_errors()

    def add_removed(self, rows: pa.Table) -> None:
        """Commit the rows ``feed.PruneRows`` marked removed."""
        self.counts.removed += rows.num_rows
        if rows.num_rows:
            self._pending.append(rows.select(METADATA_SCHEMA.names).cast(METADATA_SCHEMA))
            self._pending_rows += rows.num_rows
            self.flush()

    def _check_errors(self, minimum: int = MIN_ITEMS_BEFORE_ABORT) -> None:
        done = self.counts.rendered + self.counts.rejected + self.counts.failed
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
