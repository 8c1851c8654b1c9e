"""The Stable Video Diffusion family: the pipeline svdbatch started with. Its call lives in render/generate.py
(batched, one generator per item) and its tiny model in loading.py; this module names it for the family lookup."""

from __future__ import annotations

from svdbatch.spec.config import TINY_MODEL
from svdbatch.spec.render import PROMPTED_PARAMS

NAME = "svd"
PIPELINE = "StableVideoDiffusionPipeline"
TINY_SOURCE = TINY_MODEL
TINY_VERSION = "tiny-svd-v1"
FRAME_STEP = 1
PROMPTS = False
BATCHED = True  # several images in one call, one generator each
GUIDANCE_SCALE = None  # SVD's guidance is min_guidance_scale .. max_guidance_scale


def problems(params: dict) -> list[str]:
    """SVD takes any frame count and size its config allows (RenderParams checks the ranges), and no prompt: the
    prompted families' parameters set for it are named (a job that sets them meant another model)."""
    unused = [name for name in PROMPTED_PARAMS if params.get(name) not in (None, "")]
    return [f"{name}: {PIPELINE} does not read it (Wan and LTX do)" for name in unused]


def pipe_problems(pipe, params: dict) -> list[str]:
    return []
