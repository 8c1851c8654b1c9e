"""What a video is rendered with: the render parameters (SVD's, and the prompted families' Wan and LTX), seeds and
variants. config.py puts them in the job spec.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from svdbatch.spec.base import Strict

SEED_BITS = 63  # seeds fit Parquet's int64 and torch.Generator.manual_seed
SEED_MASK = (1 << SEED_BITS) - 1
MAX_VARIANTS = 10_000  # per manifest row, from the spec or the row's own ``variants`` column
# A prompt longer than this is an error row: the text encoders read at most 512 tokens (Wan) or 128 (LTX), about
# 2,000 and 500 characters, so such a prompt is a mistake, and it would be stored in every row and fingerprint.
MAX_PROMPT_CHARS = 10_000
# The parameters only SVD reads, and those only the prompted families (Wan, LTX) read: an item carries its family's
# and null for the others (model/families.py), so the table says what each video was rendered with.
SVD_PARAMS = ("motion_bucket_id", "noise_aug_strength", "min_guidance_scale", "max_guidance_scale", "decode_chunk_size")
PROMPTED_PARAMS = ("guidance_scale", "shift", "prompt", "negative_prompt")


class RenderParams(Strict):
    """Everything the pipeline call takes besides the image and the seed. Manifest rows may override any of these
    (the prompts come from manifest.prompt_column and manifest.negative_prompt_column)."""

    width: int = Field(default=1024, ge=8, le=4096, multiple_of=8, description="Video width in pixels.")
    height: int = Field(default=576, ge=8, le=4096, multiple_of=8, description="Video height in pixels.")
    num_frames: int = Field(
        default=25, ge=1, le=256, description="Frames per video (SVD-XT: 25, SVD: 14; Wan: 4k+1, LTX: 8k+1)."
    )
    num_inference_steps: int = Field(default=25, ge=1, le=1000, description="Denoising steps.")
    fps: int = Field(
        default=7,
        ge=1,
        le=120,
        description="Frame rate: the MP4's, and a conditioning for SVD (as fps-1) and LTX (frame_rate).",
    )
    motion_bucket_id: int = Field(default=127, ge=0, le=1023, description="SVD: amount of motion; higher moves more.")
    noise_aug_strength: float = Field(default=0.02, ge=0.0, le=10.0, description="SVD: noise added to the input image.")
    min_guidance_scale: float = Field(default=1.0, ge=0.0, le=100.0, description="SVD: guidance at the first frame.")
    max_guidance_scale: float = Field(default=3.0, ge=0.0, le=100.0, description="SVD: guidance at the last frame.")
    decode_chunk_size: int = Field(
        default=8,
        ge=1,
        description="SVD: frames decoded at once; the largest divisor of num_frames not above this is used, so "
        "batched videos never share a chunk.",
    )
    fit: Literal["crop", "pad", "stretch"] = Field(
        default="crop", description="How an image of another aspect ratio is fitted to width x height."
    )
    guidance_scale: float | None = Field(
        default=None,
        ge=0.0,
        le=100.0,
        description="Wan and LTX: classifier-free guidance (above 1 the unconditional branch runs too); default the "
        "family's own (Wan 5.0, LTX 3.0).",
    )
    shift: float | None = Field(
        default=None,
        gt=0.0,
        le=100.0,
        description="Wan and LTX: the flow-matching scheduler's shift (Wan 2.1 suggests 3.0 at 480p, 5.0 at 720p); "
        "default the model's own scheduler config.",
    )
    prompt: str = Field(
        default="",
        max_length=MAX_PROMPT_CHARS,
        description="Wan and LTX: the prompt of rows without one (manifest.prompt_column absent or null).",
    )
    negative_prompt: str = Field(
        default="",
        max_length=MAX_PROMPT_CHARS,
        description="Wan and LTX: the negative prompt of rows without one (manifest.negative_prompt_column).",
    )

    @model_validator(mode="after")
    def _guidance_order(self) -> RenderParams:
        if self.min_guidance_scale > self.max_guidance_scale:
            raise ValueError(
                f"min_guidance_scale ({self.min_guidance_scale}) must not exceed max_guidance_scale "
                f"({self.max_guidance_scale})"
            )
        return self


def unet_branches(max_guidance_scale: float) -> int:
    """UNet batch halves a step: diffusers' SVD pipeline runs the unconditional half only when guidance is on
    (``do_classifier_free_guidance``: max_guidance_scale > 1)."""
    return 2 if max_guidance_scale > 1 else 1


class SeedSpec(Strict):
    base_seed: int = Field(default=0, ge=0, le=SEED_MASK, description="Job seed every item seed derives from.")
    variants: int = Field(default=1, ge=1, le=MAX_VARIANTS, description="Videos per image, each with its own seed.")
    motion_sweep: list[int] = Field(
        default_factory=list,
        description="Motion bucket ids that variants cycle through (variant v uses entry v mod length) unless the "
        "row sets motion_bucket_id; empty: every variant uses render.motion_bucket_id.",
    )
    prompt_sweep: list[str] = Field(
        default_factory=list,
        description="Wan and LTX: prompts that variants cycle through (variant v uses entry v mod length) unless the "
        "row sets its prompt; empty: every variant uses render.prompt.",
    )

    @model_validator(mode="after")
    def _sweep_range(self) -> SeedSpec:
        for value in self.motion_sweep:
            if not 0 <= value <= 1023:
                raise ValueError(f"motion_sweep entry {value} is outside 0..1023")
        for prompt in self.prompt_sweep:
            if len(prompt) > MAX_PROMPT_CHARS:
                raise ValueError(f"prompt_sweep entry of {len(prompt):,} characters: at most {MAX_PROMPT_CHARS:,}")
        return self
