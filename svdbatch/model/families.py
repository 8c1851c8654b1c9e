"""Which family module drives a model: by the pipeline class its model_index.json names, or its tiny source."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

from svdbatch.model import ltx, svd, wan

FAMILIES: dict[str, ModuleType] = {module.PIPELINE: module for module in (svd, wan, ltx)}
TINY_SOURCES: dict[str, ModuleType] = {module.TINY_SOURCE: module for module in (svd, wan, ltx)}


def pipeline_class(folder: str | Path) -> str:
    """The pipeline class a diffusers folder names in its model_index.json."""
    return json.loads((Path(folder) / "model_index.json").read_text())["_class_name"]
