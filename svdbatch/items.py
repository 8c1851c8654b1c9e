"""Manifest row -> items: variants, seeds and output keys. Pure functions, so reruns reproduce exactly.

Seed rule (documented in the README): ``seed = derive_seed(base_seed, key, variant)`` -- the first 8 bytes of
``sha256("svdbatch-seed-v1" NUL base_seed NUL key NUL variant)`` as a big-endian integer with the top bit cleared
(it fits Parquet's int64 and ``torch.Generator.manual_seed``). A row that gives its own ``seed`` gets ``(seed +
variant) mod 2**63`` instead. Nothing depends on where a row sits in a file, block, batch or actor.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any

from pydantic import ValidationError

from svdbatch.config import JobSpec, RenderParams, describe_error
from svdbatch.metadata import ERROR, OK, REMOVED, RENDER_COLUMNS, SKIPPED, blank_row, fail

SEED_BITS = 63
SEED_MASK = (1 << SEED_BITS) - 1
MAX_SLUG = 80
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
SPEC_CHANGED = "spec changed"
SOURCE_CHANGED = "source changed"
MODEL_CHANGED = "model changed"
FAILED_BEFORE = "failed before"
# The committed row's columns a rerun compares an item with.
RESUME_COLUMNS = ("fingerprint", "status", "source_version", "model_identity")


def derive_seed(base_seed: int, key: str, variant: int) -> int:
    digest = hashlib.sha256(f"svdbatch-seed-v1\0{base_seed}\0{key}\0{variant}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & SEED_MASK


def item_id(key: str, variant: int) -> str:
    """The identity of an item across runs."""
    return f"{key}\0{variant}"


def safe_key(key: str) -> str:
    """A filesystem- and URL-safe name that is unique per key: a readable slug plus a hash of the exact key.

    The slug alone is not injective ("a/b" and "a_b" collide), so the hash suffix carries uniqueness; the slug only
    makes the file findable by eye.
    """
    slug = _UNSAFE.sub("_", key).strip("._-")[:MAX_SLUG] or "key"
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{slug}-{digest}"


def video_key(key: str, variant: int) -> str:
    return f"videos/{safe_key(key)}_v{variant:04d}.mp4"


def effective_decode_chunk(num_frames: int, requested: int) -> int:
    """Largest divisor of num_frames not above the request, so a chunk never spans two videos of a batch."""
    size = max(1, min(requested, num_frames))
    while num_frames % size:
        size -= 1
    return size


def _row_value(row: dict[str, Any], column: str) -> Any:
    value = row.get(column)
    if isinstance(value, float) and math.isnan(value):
        raise ValueError("NaN is not a number svdbatch can use")
    return value


def _overrides(row: dict[str, Any], spec: JobSpec) -> tuple[RenderParams, int | None, int]:
    """Per-row render params, seed and variant count; raises ValueError naming the column and the cause."""
    params = spec.render.model_dump()
    for column in RENDER_COLUMNS:
        if column in row:
            try:
                value = _row_value(row, column)
            except ValueError as error:
                raise ValueError(f"column {column}: {error}") from None
            if value is not None:
                params[column] = value
    try:
        render = RenderParams.model_validate(params)
    except ValidationError as error:
        raise ValueError(f"column {describe_error(error)}") from None
    seed = _checked_int(row, "seed", 0, SEED_MASK)
    variants = _checked_int(row, "variants", 1, 10_000)
    return render, seed, spec.seeds.variants if variants is None else variants


def _checked_int(row: dict[str, Any], column: str, low: int, high: int) -> int | None:
    value = row.get(column)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or int(value) != value:
        raise ValueError(f"column {column}: {value!r} is not allowed: expected a whole number")
    if not low <= int(value) <= high:
        raise ValueError(f"column {column}: {value!r} is not allowed: expected {low}..{high}")
    return int(value)


def fingerprint(item: dict[str, Any], spec: JobSpec) -> str:
    """Everything that shapes the item's video: model and its weights, render params, seed, encoding and the image
    object (URI and version). Changes force a re-render."""
    shaping = {
        "model": [spec.model.source, spec.model.variant, spec.model.dtype],
        "weights": item["model_identity"],
        "params": [item[name] for name in RENDER_COLUMNS],
        "seed": item["seed"],
        "video": spec.video.model_dump(mode="json"),
        "source": item["source_uri"],
        "source_version": item["source_version"],
    }
    return hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:32]


def resume_decision(
    item: dict[str, Any], committed: dict[str, Any] | None, retry_errors: bool
) -> tuple[str, str | None]:
    """(status, rerender_reason) of an item given its committed row's ``RESUME_COLUMNS`` (None: never committed).

    The same fingerprint means done (or a retry of an error row); otherwise the reason names the first identity
    column that differs: the model's weights, then the image object, else the spec. An error row whose image could
    not be looked up then (missing) is a failure to retry, not a changed source, when the image appears.
    """
    if committed is None or committed["status"] == REMOVED:
        return OK, None
    retry = (OK, FAILED_BEFORE) if retry_errors else (SKIPPED, None)
    if committed["fingerprint"] == item["fingerprint"]:
        return (SKIPPED, None) if committed["status"] == OK else retry
    if committed["model_identity"] != item["model_identity"]:
        return OK, MODEL_CHANGED
    if committed["source_version"] != item["source_version"]:
        return retry if committed["source_version"] is None and committed["status"] == ERROR else (OK, SOURCE_CHANGED)
    return OK, SPEC_CHANGED


PLAN_CATEGORIES = {SPEC_CHANGED: "changed", SOURCE_CHANGED: "source_changed", MODEL_CHANGED: "model_changed"}


def plan_category(item: dict[str, Any]) -> str:
    """How a plan counts an item: invalid, done, changed, source_changed, model_changed, retry or new."""
    if item["status"] == ERROR:
        return "invalid"
    if item["status"] == SKIPPED:
        return "done"
    return {**PLAN_CATEGORIES, FAILED_BEFORE: "retry"}.get(item["rerender_reason"], "new")


def allowed_schemes(spec: JobSpec) -> set[str]:
    if spec.images.allowed_schemes is not None:
        return {name.lower() for name in spec.images.allowed_schemes}
    return {uri_scheme(spec.manifest.path), uri_scheme(spec.output.url)}


def uri_scheme(uri: str) -> str:
    head, sep, _ = uri.partition("://")
    return head.lower() if sep else "file"


def check_uri(uri: str, spec: JobSpec) -> str | None:
    """Why an image URI may not be read, or None: an allow-list of schemes and prefixes, never a guess."""
    scheme = uri_scheme(uri)
    allowed = allowed_schemes(spec)
    if scheme not in allowed:
        return f"URI scheme {scheme!r} is not allowed (images.allowed_schemes: {', '.join(sorted(allowed))})"
    prefixes = spec.images.allowed_prefixes
    if prefixes and not any(uri.startswith(prefix) for prefix in prefixes):
        return "URI is outside images.allowed_prefixes"
    if "\0" in uri:
        return "URI contains a NUL byte"
    return None


def expand_row(
    row: dict[str, Any],
    spec: JobSpec,
    run_id: str,
    output_url: str,
    previous: dict[str, dict[str, Any]] | None = None,
    duplicates: dict[str, int] | None = None,
    identities: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """One manifest row -> ``variants`` work rows, or one error row saying what is wrong with the row.

    ``previous`` maps item ids to the ``RESUME_COLUMNS`` earlier runs committed; see ``commit.previous_state``.
    ``duplicates`` maps keys that appear more than once in the manifest to their count: all their rows fail, as no
    one of them is more right than the others. ``identities`` holds ``model`` (``model.model_identity``) and
    ``sources`` (image URI -> ``storage.object_version``), used where the row has no ``manifest.version_column``.
    """
    raw_key = row.get(spec.manifest.key_column)
    key = None if raw_key is None else str(raw_key)
    source = row.get(spec.manifest.image_column)
    base = blank_row()
    identities = identities or {}
    version = row.get(spec.manifest.version_column)
    base.update(
        run_id=run_id,
        key=key,
        variant=0,
        source_uri=source,
        source_version=(identities.get("sources") or {}).get(source) if version is None else str(version),
        model_source=spec.model.source,
        model_identity=identities.get("model"),
    )
    label = f"row {key!r}" if key else f"row with image {source!r}"
    if not key:
        return [fail(base, f"{label}: column {spec.manifest.key_column} is empty")]
    if duplicates and key in duplicates:
        return [fail(base, f"{label}: key appears {duplicates[key]} times in the manifest; keys must be unique")]
    if not isinstance(source, str) or not source.strip():
        return [fail(base, f"{label}: column {spec.manifest.image_column} is empty")]
    refused = check_uri(source, spec)
    if refused:
        return [fail(base, f"{label}: image {source!r}: {refused}")]
    try:
        render, row_seed, variants = _overrides(row, spec)
    except ValueError as error:
        return [fail(base, f"{label}: {error}")]
    items = []
    sweep = spec.seeds.motion_sweep if row.get("motion_bucket_id") is None else []
    for variant in range(variants):
        item = dict(base)
        item.update(render.model_dump())
        if sweep:
            item["motion_bucket_id"] = sweep[variant % len(sweep)]
        item.update(
            variant=variant,
            seed=derive_seed(spec.seeds.base_seed, key, variant)
            if row_seed is None
            else (row_seed + variant) & SEED_MASK,
            decode_chunk_size=effective_decode_chunk(render.num_frames, render.decode_chunk_size),
            video_uri=f"{output_url.rstrip('/')}/{video_key(key, variant)}",
            status=OK,
        )
        item["fingerprint"] = fingerprint(item, spec)
        committed = (previous or {}).get(item_id(key, variant))
        item["status"], item["rerender_reason"] = resume_decision(item, committed, spec.failures.retry_errors)
        items.append(item)
    return items
