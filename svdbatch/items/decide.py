"""Whether an item renders again: its own columns against what an earlier run committed for it (the resume
decision), and how a plan counts the outcome. Pure functions, no Ray."""

from __future__ import annotations

import functools
from enum import StrEnum
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from svdbatch import formats
from svdbatch.items.metadata import ERROR, OK, REJECTED, REMOVED, SKIPPED
from svdbatch.spec.config import JobSpec


class Reason(StrEnum):
    """Why an item is rendered again: the ``rerender_reason`` column."""

    SPEC_CHANGED = "spec changed"
    SOURCE_CHANGED = "source changed"
    MODEL_CHANGED = "model changed"
    FAILED_BEFORE = "failed before"


class Category(StrEnum):
    """How a plan counts an item."""

    NEW = "new"
    DONE = "done"
    CHANGED = "changed"
    SOURCE_CHANGED = "source_changed"
    MODEL_CHANGED = "model_changed"
    RETRY = "retry"
    INVALID = "invalid"


TO_RENDER = (Category.NEW, Category.CHANGED, Category.SOURCE_CHANGED, Category.MODEL_CHANGED, Category.RETRY)


# The committed columns the resume decision reads, carried from the metadata table through the join by item id.
RESUME_COLUMNS = ["fingerprint", "status", "source_version", "model_identity"]
COMMITTED = "committed_"  # prefix of the RESUME_COLUMNS carried through the join next to the item's own columns


def decide(batch: pa.Table, spec: JobSpec) -> pa.Table:
    """Items joined with the ``COMMITTED`` columns of their committed row (``store.state.join``) -> the
    same items with ``rerun``'s status and reason, without those columns. A committed row without identities (row
    format 1, svdbatch/formats.py) is compared by that format's fingerprint."""
    committed = [COMMITTED + name for name in RESUME_COLUMNS if COMMITTED + name in batch.column_names]
    if not committed:
        return batch
    columns = {name: batch[name].combine_chunks() for name in [*OWN_COLUMNS, *committed]}
    columns.update(_as_rows_1(batch, columns, spec))
    status, reason = rerun(columns, spec.failures.retry_errors)
    batch = batch.drop_columns(committed)
    batch = batch.set_column(batch.schema.get_field_index("status"), "status", status)
    return batch.set_column(batch.schema.get_field_index("rerender_reason"), "rerender_reason", reason)


def _as_rows_1(batch: pa.Table, columns: dict[str, pa.Array], spec: JobSpec) -> dict[str, pa.Array]:
    """What to compare with where the committed row is of row format 1 (a fingerprint, no identities): that format's
    fingerprint and no identities. Empty when no item has such a row."""
    committed = [columns[COMMITTED + name] for name in ("fingerprint", "model_identity", "source_version")]
    old = _all(formats.rows_1(*committed), pc.fill_null(pc.equal(columns["status"], OK), False))
    if not pc.any(old).as_py():
        return {}
    rows = batch.filter(old).select(["seed", "source_uri", *formats.ROW_1_PARAMS]).to_pylist()
    fingerprints = pa.array([formats.fingerprint_1(row, spec) for row in rows], pa.string())
    return {
        "fingerprint": pc.replace_with_mask(columns["fingerprint"], old, fingerprints),
        "model_identity": pc.if_else(old, _NULL, columns["model_identity"]),
        "source_version": pc.if_else(old, _NULL, columns["source_version"]),
    }


# The item's own columns the decision reads.
OWN_COLUMNS = ["status", "fingerprint", "model_identity", "source_version", "rerender_reason"]


def rerun(columns: dict[str, pa.Array], retry_errors: bool) -> tuple[pa.Array, pa.Array]:
    """Every item's ``status`` and ``rerender_reason`` once what an earlier run committed is known, column-wise.

    ``columns`` holds OWN_COLUMNS and the ``COMMITTED`` RESUME_COLUMNS (all null: nothing committed). An item is
    skipped when the same fingerprint was committed as done (ok or rejected: the same fingerprint renders the same
    pixels, so rendering it again cannot pass the quality gates, which do not shape the video), or as failed while
    ``retry_errors`` is off. A changed fingerprint is explained by the first identity that differs: the model's
    weights, then the image object, else the spec; a failed row whose image could not be looked up then (no version)
    is a failure to retry, not a changed source. Items never committed, committed as removed, or that already failed
    in expansion are left as they are.
    """
    was = {name: columns[COMMITTED + name] for name in RESUME_COLUMNS}
    applies = _all(
        functools.reduce(pc.or_, [pc.is_valid(was[name]) for name in RESUME_COLUMNS]),
        pc.fill_null(pc.not_equal(was["status"], REMOVED), True),
        pc.fill_null(pc.equal(columns["status"], OK), False),
    )
    same = _same(was["fingerprint"], columns["fingerprint"])
    retry = pa.scalar(Reason.FAILED_BEFORE.value if retry_errors else None, pa.string())
    lost_image = _all(pc.is_null(was["source_version"]), pc.fill_null(pc.equal(was["status"], ERROR), False))
    # From the last rule to the first, each one overriding those after it.
    reason = pa.array([Reason.SPEC_CHANGED.value] * len(same), pa.string())
    reason = pc.if_else(_same(was["source_version"], columns["source_version"]), reason, Reason.SOURCE_CHANGED.value)
    reason = pc.if_else(lost_image, retry, reason)
    reason = pc.if_else(_same(was["model_identity"], columns["model_identity"]), reason, Reason.MODEL_CHANGED.value)
    reason = pc.if_else(same, retry, reason)
    reason = pc.if_else(_all(same, pc.fill_null(pc.is_in(was["status"], _DONE), False)), _NULL, reason)
    status = pc.if_else(_all(applies, pc.is_null(reason)), SKIPPED, columns["status"])
    return status, pc.if_else(applies, reason, columns["rerender_reason"])


def resume(item: dict[str, Any], committed: dict[str, Any] | None, retry_errors: bool) -> None:
    """``rerun`` for one item (a dict), in place: its ``status`` and ``rerender_reason``. ``committed`` holds the
    RESUME_COLUMNS of its row in the metadata table, or None when no run committed it."""
    columns = {name: pa.array([item.get(name)], pa.string()) for name in OWN_COLUMNS}
    committed = committed or {}
    columns.update({COMMITTED + name: pa.array([committed.get(name)], pa.string()) for name in RESUME_COLUMNS})
    status, reason = rerun(columns, retry_errors)
    item["status"], item["rerender_reason"] = status[0].as_py(), reason[0].as_py()


_DONE = pa.array([OK, REJECTED])
_NULL = pa.scalar(None, pa.string())


def _all(*conditions: pa.Array) -> pa.Array:
    return functools.reduce(pc.and_, conditions)


def _same(left: pa.Array, right: pa.Array) -> pa.Array:
    """Equal as Python compares: two nulls are the same, a null and a value are not."""
    return pc.or_(pc.fill_null(pc.equal(left, right), False), _all(pc.is_null(left), pc.is_null(right)))


CATEGORY_OF_REASON = {
    Reason.SPEC_CHANGED: Category.CHANGED,
    Reason.SOURCE_CHANGED: Category.SOURCE_CHANGED,
    Reason.MODEL_CHANGED: Category.MODEL_CHANGED,
    Reason.FAILED_BEFORE: Category.RETRY,
}


def plan_category(item: dict[str, Any]) -> Category:
    """How a plan counts a decided item."""
    if item["status"] == ERROR:
        return Category.INVALID
    if item["status"] == SKIPPED:
        return Category.DONE
    reason = item["rerender_reason"]
    return CATEGORY_OF_REASON[Reason(reason)] if reason else Category.NEW

