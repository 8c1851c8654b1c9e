"""The Stable Video Diffusion family: the pipeline svdbatch started with. Its call lives in render/generate.py
(batched, one generator per item) and its tiny model in loading.py; this module names it for the family lookup."""

from __future__ import annotations

from svdbatch.spec.config import TINY_MODEL

NAME = "svd"
PIPELINE = "StableVideoDiffusionPipeline"
TINY_SOURCE = TINY_MODEL
TINY_VERSION = "tiny-svd-v1"
FRAME_STEP = 1
PROMPTS = False


def problems(params: dict) -> list[str]:
    """SVD takes any frame count and size its config allows (RenderParams checks the ranges)."""
    return []
