"""The spec tree as reference lines: every field with its type, default and description, as ``svdbatch spec``
prints it and the generated docs page shows it."""

from __future__ import annotations

from typing import Any, NamedTuple, get_args

import yaml
from pydantic import BaseModel

from svdbatch.spec.config import JobSpec


class SpecLine(NamedTuple):
    """One line of the spec reference: a section (``default`` None) or a field with its default, at a depth."""

    name: str
    description: str
    default: str | None
    depth: int


def _shown(value: Any) -> str:
    """A default as it is written in a spec (YAML flow style), not as Python prints it."""
    if isinstance(value, BaseModel):
        value = value.model_dump(exclude_none=True)
    return yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("...").strip()


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds, alone or as a branch of a union (compute.actors: a number or a range)."""
    for candidate in (annotation, *get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def spec_lines(model: type[BaseModel] = JobSpec, prefix: str = "", depth: int = 0) -> list[SpecLine]:
    """Every section and field of the job spec, in the order the code declares them, generated so the reference
    never drifts from the code (``svdbatch spec``, docs/reference/job-spec.md)."""
    found = []
    for name, info in model.model_fields.items():
        dotted, nested = f"{prefix}{name}", _model_in(info.annotation)
        if nested is not None and nested is info.annotation:
            found.append(SpecLine(dotted, info.description or "", None, depth))
            found.extend(spec_lines(nested, dotted + ".", depth + 1))
            continue
        default = "required" if info.is_required() else _shown(info.get_default(call_default_factory=True))
        found.append(SpecLine(dotted, info.description or "", default, depth))
        if nested is not None:  # a union with a model: its fields too, one level in
            found.extend(spec_lines(nested, dotted + ".", depth + 1))
    return found


def reference() -> list[str]:
    """``svdbatch spec``: a line per section and field, indented by depth; sections and top-level fields start at
    the margin, so a top-level field never reads as part of the section above it."""
    lines = []
    for line in spec_lines():
        indent = "  " * line.depth
        if line.default is None:
            lines.append(f"{indent}{line.name}: {line.description}")
        else:
            lines.append(f"{indent}{line.name} = {line.default}  # {line.description}")
    return lines
