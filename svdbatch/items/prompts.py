"""The columns a manifest row may set its own parameters in, by family: SVD's render parameters by name; for Wan
and LTX also guidance_scale, shift and the prompts (manifest.prompt_column, manifest.negative_prompt_column).

A prompt that is not text, or is longer than MAX_PROMPT_CHARS, fails its row in one line naming the column; any
other text (empty, control characters, any script) goes to the pipeline as it is, and its tokenizer truncates it to
what the text encoder reads, as plain diffusers would.
"""

from __future__ import annotations

from typing import Any

from svdbatch.items.metadata import RENDER_COLUMNS
from svdbatch.model.families import prompted
from svdbatch.spec.config import MAX_PROMPT_CHARS, JobSpec

PROMPTS = ("prompt", "negative_prompt")


def row_columns(spec: JobSpec, family: str) -> dict[str, str]:
    """Parameter -> the manifest column a row of ``family`` sets it in."""
    columns = {name: name for name in RENDER_COLUMNS}
    if prompted(family):
        columns.update(guidance_scale="guidance_scale", shift="shift")
        columns.update(prompt=spec.manifest.prompt_column, negative_prompt=spec.manifest.negative_prompt_column)
    return columns


def checked_prompt(value: Any, column: str) -> str:
    """A row's prompt as given, or ValueError naming the column and the cause."""
    if not isinstance(value, str):
        raise ValueError(f"column {column}: {repr(value)[:40]} is not text")
    if len(value) > MAX_PROMPT_CHARS:
        raise ValueError(
            f"column {column}: {len(value):,} characters, at most {MAX_PROMPT_CHARS:,} (the text encoder reads a few "
            "hundred tokens of it)"
        )
    return value


def manifest_columns(spec: JobSpec) -> list[str]:
    """Every column a row of any family may set its parameters in: what the manifest read keeps."""
    prompts = [spec.manifest.prompt_column, spec.manifest.negative_prompt_column]
    return [*RENDER_COLUMNS, "guidance_scale", "shift", *prompts]
