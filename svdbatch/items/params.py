"""An item's render parameters: the job's, or a manifest row's own (``prompts.row_columns``, ``seed``,
``variants``), checked as the spec and the model's family check them, as the family reads them (``family_params``),
with SVD's decode chunk fitted to the frames, and its motion (or Wan's and LTX's prompt) swept over variants."""

from __future__ import annotations

import math
from typing import Any

from pydantic import ValidationError

from svdbatch.items.prompts import PROMPTS, checked_prompt, row_columns
from svdbatch.model.families import BY_NAME, family_params, prompted
from svdbatch.spec.config import MAX_VARIANTS, SEED_MASK, JobSpec, RenderParams
from svdbatch.spec.load import describe_error


def override_columns(spec: JobSpec, family: str) -> list[str]:
    """The manifest columns a row of ``family`` may set for itself."""
    return [*row_columns(spec, family).values(), "seed", "variants"]


def effective_decode_chunk(num_frames: int, requested: int) -> int:
    """Largest divisor of num_frames not above the request, so a chunk never spans two videos of a batch."""
    size = max(1, min(requested, num_frames))
    while num_frames % size:
        size -= 1
    return size


def variant_params(
    render: dict[str, Any], variants: int, family: str, sweeps: dict[str, list]
) -> list[dict[str, Any]]:
    """The render parameters of a row's variants: ``render`` as ``family`` reads it, SVD's decode chunk fitted to the
    frames, and variant ``i``'s value ``sweep[i % len(sweep)]`` of each parameter ``sweeps`` sweeps."""
    render = dict(family_params(render, family), model_family=family)
    if render["decode_chunk_size"] is not None:
        render["decode_chunk_size"] = effective_decode_chunk(render["num_frames"], render["decode_chunk_size"])
    sweeps = {name: sweep for name, sweep in sweeps.items() if sweep}
    if not sweeps:
        return [render] * variants
    return [
        dict(render, **{name: sweep[variant % len(sweep)] for name, sweep in sweeps.items()})
        for variant in range(variants)
    ]


def _sweeps(spec: JobSpec, family: str, overrides: dict[str, Any]) -> dict[str, list]:
    """What variants sweep: SVD's motion, Wan's and LTX's prompt, where the row sets no value of its own."""
    if prompted(family):
        return {"prompt": spec.seeds.prompt_sweep if overrides.get(spec.manifest.prompt_column) is None else []}
    return {"motion_bucket_id": spec.seeds.motion_sweep if overrides.get("motion_bucket_id") is None else []}


def job_params(spec: JobSpec, family: str) -> list[dict[str, Any]]:
    """The render parameters of the variants of a row that sets none of its own."""
    return variant_params(spec.render.model_dump(), spec.seeds.variants, family, _sweeps(spec, family, {}))


def row_params(overrides: dict[str, Any], spec: JobSpec, family: str) -> tuple[list[dict[str, Any]], int | None]:
    """The render parameters of a row's variants and its own seed (None: derived), from the ``override_columns`` it
    holds (null: the job's value); raises ValueError naming the column and the cause, or what the family cannot
    render. A parameter is swept only where the row sets none."""
    params = spec.render.model_dump()
    for name, column in row_columns(spec, family).items():
        value = overrides.get(column)
        if isinstance(value, float) and math.isnan(value):
            raise ValueError(f"column {column}: NaN is not a number svdbatch can use")
        if value is not None:
            params[name] = checked_prompt(value, column) if name in PROMPTS else value
    try:
        render = RenderParams.model_validate(params).model_dump()
    except ValidationError as error:
        raise ValueError(f"column {describe_error(error)}") from None
    problems = BY_NAME[family].problems(render)
    if problems:
        raise ValueError("; ".join(problems))
    seed = _checked_int(overrides, "seed", 0, SEED_MASK)
    variants = _checked_int(overrides, "variants", 1, MAX_VARIANTS)
    count = spec.seeds.variants if variants is None else variants
    return variant_params(render, count, family, _sweeps(spec, family, overrides)), seed


def _checked_int(row: dict[str, Any], column: str, low: int, high: int) -> int | None:
    value = row.get(column)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or int(value) != value:
        raise ValueError(f"column {column}: {value!r} is not allowed: expected a whole number")
    if not low <= int(value) <= high:
        raise ValueError(f"column {column}: {value!r} is not allowed: expected {low}..{high}")
    return int(value)
