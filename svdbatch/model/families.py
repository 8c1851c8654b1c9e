"""Which family module drives a model (by the pipeline class its model_index.json names, its tiny source, or its
name) and what an item of each family carries. Imports no torch: the driver and the expand tasks use it."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

from svdbatch.model import ltx, svd, wan
from svdbatch.model.internals import pipeline_class_name
from svdbatch.spec.config import JobSpec
from svdbatch.spec.render import PROMPTED_PARAMS, SVD_PARAMS

FAMILIES: dict[str, ModuleType] = {module.PIPELINE: module for module in (svd, wan, ltx)}
TINY_SOURCES: dict[str, ModuleType] = {module.TINY_SOURCE: module for module in (svd, wan, ltx)}
BY_NAME: dict[str, ModuleType] = {module.NAME: module for module in (svd, wan, ltx)}


def pipeline_class(folder: str | Path) -> str | None:
    """The pipeline class a diffusers folder names in its model_index.json."""
    return pipeline_class_name(json.loads((Path(folder) / "model_index.json").read_text()))


def family_params(params: dict[str, Any], name: str) -> dict[str, Any]:
    """An item's render parameters as family ``name`` reads them: the other families' null, and the family's own
    guidance where none is given."""
    family = BY_NAME[name]
    if not family.PROMPTS:
        return {**params, **dict.fromkeys(PROMPTED_PARAMS)}
    own = {**params, **dict.fromkeys(SVD_PARAMS)}
    if own["guidance_scale"] is None:
        own["guidance_scale"] = family.GUIDANCE_SCALE
    return own


def prompted(name: str | None) -> bool:
    """Whether family ``name`` reads prompts (and the other PROMPTED_PARAMS): what its fingerprints include."""
    return name is not None and BY_NAME[name].PROMPTS


def spec_problems(spec: JobSpec, name: str) -> list[str]:
    """What a job's render defaults and seeds ask of family ``name`` that it cannot do, one line each: checked
    before any work, as a row's own parameters are checked when it expands."""
    family = BY_NAME[name]
    found = [f"render.{problem}" for problem in family.problems(spec.render.model_dump())]
    if spec.seeds.motion_sweep and family.PROMPTS:
        found.append("seeds.motion_sweep: sweeps SVD's motion_bucket_id, which this family does not read")
    if spec.seeds.prompt_sweep and not family.PROMPTS:
        found.append(f"seeds.prompt_sweep: {family.PIPELINE} does not read prompts (Wan and LTX do)")
    return found
