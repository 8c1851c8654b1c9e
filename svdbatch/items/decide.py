"""Whether an item renders again: its own columns against what an earlier run committed for it (the resume
decision), and how a plan counts the outcome. Pure functions, no Ray."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from svdbatch.items.metadata import ERROR, OK, REJECTED, REMOVED, SKIPPED


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


def predates_identities(committed: dict[str, Any]) -> bool:
    return committed["model_identity"] is None and committed["source_version"] is None


def resume(item: dict[str, Any], committed: dict[str, Any] | None, retry_errors: bool) -> None:
    """Skip what an earlier run committed with the same fingerprint; say why anything else is rendered again.

    ``committed`` holds the RESUME_COLUMNS of the item's current row in the metadata table, or None when no run
    committed it. Rows that already failed in expansion are left alone. A changed fingerprint is explained by the
    first identity column that differs: the model's weights, then the image object, else the spec. An error row
    whose image could not be looked up then (missing) is a failure to retry, not a changed source, once it appears.
    A rejected item is done: the same fingerprint renders the same pixels, so rendering it again cannot pass the
    quality gates; the gates are not in the fingerprint because they do not shape the video.
    """
    if committed is None or committed["status"] == REMOVED or item["status"] != OK:
        return
    retry = Reason.FAILED_BEFORE if retry_errors else None
    if committed["fingerprint"] == item["fingerprint"]:
        reason = None if committed["status"] in (OK, REJECTED) else retry
    elif committed["model_identity"] != item["model_identity"]:
        reason = Reason.MODEL_CHANGED
    elif committed["source_version"] is None and committed["status"] == ERROR:
        reason = retry
    elif committed["source_version"] != item["source_version"]:
        reason = Reason.SOURCE_CHANGED
    else:
        reason = Reason.SPEC_CHANGED
    if reason is None:
        item["status"] = SKIPPED
    item["rerender_reason"] = reason


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

