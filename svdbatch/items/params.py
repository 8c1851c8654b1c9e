"""An item's render parameters: the job's, or a manifest row's own (``RENDER_COLUMNS``, ``seed``, ``variants``),
checked as the spec checks them, with the decode chunk fitted to the frames and the motion swept over variants."""

from __future__ import annotations

import math
from typing import Any

from pydantic import ValidationError

from svdbatch.items.metadata import RENDER_COLUMNS
from svdbatch.spec.config import MAX_VARIANTS, SEED_MASK, JobSpec, RenderParams
from svdbatch.spec.load import describe_error

# The manifest columns a row may set for itself.
OVERRIDE_COLUMNS = [*RENDER_COLUMNS, "seed", "variants"]


def effective_decode_chunk(num_frames: int, requested: int) -> int:
    """Largest divisor of num_frames not above the request, so a chunk never spans two videos of a batch."""
    size = max(1, min(requested, num_frames))
    while num_frames % size:
        size -= 1
    return size


def variant_params(render: dict[str, Any], variants: int, sweep: list[int]) -> list[dict[str, Any]]:
    """The render parameters of a row's variants: ``render`` with the decode chunk fitted to the frames, and
    variant ``i``'s motion ``sweep[i % len(sweep)]`` when there is a sweep."""
    render = dict(render, decode_chunk_size=effective_decode_chunk(render["num_frames"], render["decode_chunk_size"]))
    if not sweep:
        return [render] * variants
    return [dict(render, motion_bucket_id=sweep[variant % len(sweep)]) for variant in range(variants)]


def job_params(spec: JobSpec) -> list[dict[str, Any]]:
    """The render parameters of the variants of a row that sets none of its own."""
    return variant_params(spec.render.model_dump(), spec.seeds.variants, spec.seeds.motion_sweep)


def row_params(overrides: dict[str, Any], spec: JobSpec) -> tuple[list[dict[str, Any]], int | None]:
    """The render parameters of a row's variants and its own seed (None: derived), from the ``OVERRIDE_COLUMNS`` it
    holds (null: the job's value); raises ValueError naming the column and the cause. The motion is swept only where
    the row sets none."""
    params = spec.render.model_dump()
    for column in RENDER_COLUMNS:
        if column in overrides:
            value = overrides[column]
            if isinstance(value, float) and math.isnan(value):
                raise ValueError(f"column {column}: NaN is not a number svdbatch can use")
            if value is not None:
                params[column] = value
    try:
        render = RenderParams.model_validate(params)
    except ValidationError as error:
        raise ValueError(f"column {describe_error(error)}") from None
    seed = _checked_int(overrides, "seed", 0, SEED_MASK)
    variants = _checked_int(overrides, "variants", 1, MAX_VARIANTS)
    sweep = spec.seeds.motion_sweep if overrides.get("motion_bucket_id") is None else []
    count = spec.seeds.variants if variants is None else variants
    return variant_params(render.model_dump(), count, sweep), seed


def _checked_int(row: dict[str, Any], column: str, low: int, high: int) -> int | None:
    value = row.get(column)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or int(value) != value:
        raise ValueError(f"column {column}: {value!r} is not allowed: expected a whole number")
    if not low <= int(value) <= high:
        raise ValueError(f"column {column}: {value!r} is not allowed: expected {low}..{high}")
    return int(value)
