"""Manifest row -> items: variants, seeds and output keys. Pure functions, so reruns reproduce exactly.

Seed rule (docs/guides/dataset-augmentation.md): ``seed = derive_seed(base_seed, key, variant)`` -- the first 8 bytes of
``sha256("svdbatch-seed-v1" NUL base_seed NUL key NUL variant)`` as a big-endian integer with the top bit cleared
(it fits Parquet's int64 and ``torch.Generator.manual_seed``). A row that gives its own ``seed`` gets ``(seed +
variant) mod 2**63`` instead. Nothing depends on where a row sits in a file, block, batch or actor.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from enum import StrEnum
from json.encoder import encode_basestring_ascii
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import ValidationError

from svdbatch import storage
from svdbatch.items.metadata import (
    ERROR,
    OK,
    REJECTED,
    REMOVED,
    RENDER_COLUMNS,
    SKIPPED,
    WORK_SCHEMA,
    blank_row,
    fail,
    to_table,
)
from svdbatch.spec.config import MAX_VARIANTS, SEED_MASK, JobSpec, RenderParams
from svdbatch.spec.load import describe_error

MAX_SLUG = 80
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


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
    variants = _checked_int(row, "variants", 1, MAX_VARIANTS)
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


def _shaping(spec: JobSpec, params: dict[str, Any], seed: int, source: Any, version: Any, weights: Any) -> str:
    shaping = {
        "model": [spec.model.source, spec.model.variant, spec.model.dtype],
        "weights": weights,
        "params": [params[name] for name in RENDER_COLUMNS],
        "seed": seed,
        "source": source,
        "source_version": version,
        "video": spec.video.model_dump(mode="json"),
    }
    if spec.model.step_cache.enabled:  # absent when off, so outputs rendered before the option existed stay done
        shaping["step_cache"] = spec.model.step_cache.model_dump()
    if not spec.model.scheduler.is_default:  # likewise: the model's own sampler is what every earlier run used
        shaping["scheduler"] = spec.model.scheduler.model_dump()
    return json.dumps(shaping, sort_keys=True)


def fingerprint(item: dict[str, Any], spec: JobSpec) -> str:
    """Everything that shapes the item's video: model and its weights, render params, seed, encoding and the image
    object (URI and version). Changes force a re-render."""
    text = _shaping(spec, item, item["seed"], item["source_uri"], item["source_version"], item["model_identity"])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


# The committed columns the resume decision reads, carried from the metadata table through the join by item id.
RESUME_COLUMNS = ["fingerprint", "status", "source_version", "model_identity"]
COMMITTED = "committed_"  # prefix of the RESUME_COLUMNS carried through the join next to the item's own columns


def legacy_fingerprint(item: dict[str, Any], spec: JobSpec) -> str:
    """The fingerprint of versions before identities (0.1.0 up to 9a19628): model name, params, seed, encoding and
    image URI. Rows they committed carry it and no model or source identity; an item that still matches it is done,
    so an upgrade renders nothing again (their weights and images can no longer be checked, only new rows are)."""
    shaping = {
        "model": [spec.model.source, spec.model.variant, spec.model.dtype],
        "params": [item[name] for name in RENDER_COLUMNS],
        "seed": item["seed"],
        "video": spec.video.model_dump(mode="json"),
        "source": item["source_uri"],
    }
    return hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:32]


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


def allowed_schemes(spec: JobSpec) -> set[str]:
    if spec.images.allowed_schemes is not None:
        return {name.lower() for name in spec.images.allowed_schemes}
    return {storage.scheme(spec.manifest.path), storage.scheme(spec.output.url)}


def check_uri(uri: str, spec: JobSpec) -> str | None:
    """Why an image URI may not be read, or None: an allow-list of schemes and prefixes, never a guess."""
    scheme = storage.scheme(uri)
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
    duplicates: dict[str, int] | None = None,
    identities: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """One manifest row -> ``variants`` work rows, or one error row saying what is wrong with the row.

    What earlier runs committed is applied afterwards, by ``resume``, once the items are joined with the table.
    ``duplicates`` maps keys that appear more than once in the manifest to their count: all their rows fail, as no
    one of them is more right than the others. ``identities`` holds ``model`` (``model.model_identity``) and
    ``sources`` (image URI -> ``storage.object_version``), used where the row has no ``manifest.version_column``.
    """
    raw_key = row.get(spec.manifest.key_column)
    key = None if raw_key is None else str(raw_key)
    source = row.get(spec.manifest.image_column)
    identities = identities or {}
    base = blank_row()
    base.update(
        run_id=run_id,
        key=key,
        variant=0,
        source_uri=source,
        source_version=source_version(row.get(spec.manifest.version_column), source, identities),
        model_source=spec.model.source,
        model_identity=identities.get("model"),
    )
    label = f"row {key!r}" if key else f"row with image {source!r}"
    problem = _row_problem(key, source, spec, duplicates)
    if problem:
        return [fail(base, f"{label}: {problem}")]
    try:
        render, row_seed, variants = _overrides(row, spec)
    except ValueError as error:
        return [fail(base, f"{label}: {error}")]
    sweep = spec.seeds.motion_sweep if row.get("motion_bucket_id") is None else []
    items = []
    for variant in range(variants):
        item = dict(base, **render.model_dump())
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
        items.append(item)
    return items


def _row_problem(key: str | None, source: Any, spec: JobSpec, duplicates: dict[str, int] | None) -> str | None:
    """What makes a manifest row fail whatever its parameters (no key, a duplicate key, no image, an image URI the
    job refuses), or None."""
    if not key:
        return f"column {spec.manifest.key_column} is empty"
    if duplicates and key in duplicates:
        return f"key appears {duplicates[key]} times in the manifest; keys must be unique"
    if not isinstance(source, str) or not source.strip():
        return f"column {spec.manifest.image_column} is empty"
    refused = check_uri(source, spec)
    return f"image {source!r}: {refused}" if refused else None


OVERRIDE_COLUMNS = [*RENDER_COLUMNS, "seed", "variants"]


def _has_overrides(batch: pa.Table) -> bool:
    return any(name in batch.column_names and batch[name].null_count < batch.num_rows for name in OVERRIDE_COLUMNS)


def source_version(listed: Any, source: Any, identities: dict[str, Any]) -> str | None:
    """The image's version: the manifest's when the row has one, else the one looked up in the store."""
    return (identities.get("sources") or {}).get(source) if listed is None else str(listed)


def _fingerprint_template(spec: JobSpec, params: dict[str, Any], weights: Any) -> tuple[str, str]:
    """The JSON ``fingerprint`` hashes, split around its seed, source and source version: the parts that vary per
    item. Sorted keys put them next to each other; quotes inside string values are escaped, so the marker occurs
    once.
    """
    head, tail = _shaping(spec, params, 0, "", "", weights).split(_FINGERPRINT_MARKER)
    return head, tail


_FINGERPRINT_MARKER = '"seed": 0, "source": "", "source_version": ""'


def expand_batch(
    batch: pa.Table,
    spec: JobSpec,
    run_id: str,
    output_url: str,
    duplicates: dict[str, int] | None = None,
    identities: dict[str, Any] | None = None,
) -> pa.Table:
    """``expand_row`` over a batch, as columns: the same items bit for bit, built without a dict per item.

    Batches with per-row overrides, and rows that fail, go through ``expand_row``; the common case (job-wide
    parameters) only hashes each item's seed, fingerprint and output key.
    """
    if _has_overrides(batch):
        expand = [expand_row(row, spec, run_id, output_url, duplicates, identities) for row in batch.to_pylist()]
        return to_table([item for items in expand for item in items])
    identities = identities or {}
    keys = batch[spec.manifest.key_column]
    if not pa.types.is_string(keys.type):
        keys = pc.cast(keys, pa.string())
    sources = batch[spec.manifest.image_column].to_pylist()
    version_column = spec.manifest.version_column
    listed = batch[version_column].to_pylist() if version_column in batch.column_names else [None] * batch.num_rows
    per_variant = _variant_params(spec, identities.get("model"))
    templates = [template for _, template in per_variant]
    base = spec.seeds.base_seed
    prefix = output_url.rstrip("/") + "/videos/"
    looked_up = identities.get("sources") or {}
    refused: dict[Any, str | None] = {}  # a URI's verdict, once per batch (variants and repeated images share it)
    sha256 = hashlib.sha256
    names = ("key", "variant", "source_uri", "source_version", "video_uri", "seed", "fingerprint")
    columns: dict[str, list] = {name: [] for name in names}
    failed: list[dict[str, Any]] = []
    for key, source, version in zip(keys.to_pylist(), sources, listed, strict=True):
        if source not in refused:
            refused[source] = _source_problem(source, spec)
        if not key or refused[source] or (duplicates and key in duplicates):
            row = {spec.manifest.key_column: key, spec.manifest.image_column: source, version_column: version}
            failed.extend(expand_row(row, spec, run_id, output_url, duplicates, identities))
            continue
        safe = safe_key(key)
        found = looked_up.get(source) if version is None else str(version)
        varying = f'"source": {_json_text(source)}, "source_version": {_json_text(found)}'
        for variant, (head, tail) in enumerate(templates):
            seed = derive_seed(base, key, variant)
            columns["key"].append(key)
            columns["variant"].append(variant)
            columns["source_uri"].append(source)
            columns["source_version"].append(found)
            columns["video_uri"].append(f"{prefix}{safe}_v{variant:04d}.mp4")
            columns["seed"].append(seed)
            columns["fingerprint"].append(sha256(f'{head}"seed": {seed}, {varying}{tail}'.encode()).hexdigest()[:32])
    model = {"model_source": spec.model.source, "model_identity": identities.get("model")}
    variants = pa.array(columns["variant"], pa.int32())
    for name in RENDER_COLUMNS:  # the same per variant: one small array, taken per item
        values = pa.array([params[name] for params, _ in per_variant], WORK_SCHEMA.field(name).type)
        columns[name] = values.take(variants)
    table = _work_table(columns, {"run_id": run_id, **model, "status": OK})
    return pa.concat_tables([table, to_table(failed)]) if failed else table


def _source_problem(source: Any, spec: JobSpec) -> str | None:
    """``_row_problem``'s verdict on the image column alone."""
    if not isinstance(source, str) or not source.strip():
        return "empty"
    return check_uri(source, spec)


def _json_text(value: str | None) -> str:
    """``json.dumps`` of a string or None, without its per-call overhead (the fingerprint hashes this text)."""
    return "null" if value is None else encode_basestring_ascii(value)


def _variant_params(spec: JobSpec, weights: Any) -> list[tuple[dict[str, Any], tuple[str, str]]]:
    """Per variant of a row without overrides: its render parameters (the job's, with its motion from the sweep)
    and its fingerprint template (``_fingerprint_template``)."""
    render = spec.render.model_dump()
    render["decode_chunk_size"] = effective_decode_chunk(spec.render.num_frames, spec.render.decode_chunk_size)
    sweep = spec.seeds.motion_sweep
    per_variant = []
    for variant in range(spec.seeds.variants):
        params = dict(render, motion_bucket_id=sweep[variant % len(sweep)]) if sweep else render
        per_variant.append((params, _fingerprint_template(spec, params, weights)))
    return per_variant


def _work_table(columns: dict[str, list], constants: dict[str, Any]) -> pa.Table:
    """The work rows as a WORK_SCHEMA table: the columns built per item, the string ``constants`` repeated, and
    nulls in every other column."""
    count = len(columns["key"])
    arrays = {
        name: values if isinstance(values, pa.Array) else pa.array(values, WORK_SCHEMA.field(name).type)
        for name, values in columns.items()
    }
    arrays.update({name: pa.array([value] * count, pa.string()) for name, value in constants.items()})
    return pa.table(
        [
            arrays[name] if name in arrays else pa.nulls(count, field.type)
            for name, field in zip(WORK_SCHEMA.names, WORK_SCHEMA, strict=True)
        ],
        schema=WORK_SCHEMA,
    )
