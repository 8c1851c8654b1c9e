"""What the family modules (svd, wan, ltx) share: a fresh scheduler per call and the checks of frame counts and
sizes. ``families`` maps a pipeline class to its module.

A family module says what its pipeline needs: conditioning (an image; a prompt and negative prompt
for Wan and LTX), which render parameters are valid, how the seed reaches the generator, how frames come out and
what a video costs in FLOPs. The stages, seeds, resume, commit and report never ask which family they serve.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def fresh_scheduler(pipe, shift: float | None) -> None:
    """A new scheduler from the model's config before every call (a flow-matching scheduler keeps state between
    calls, so a second call with the same seed differs), with ``shift`` set where given: the same scheduler plain
    diffusers makes with ``from_config(pipe.scheduler.config, shift=...)`` (``flow_shift`` for UniPC)."""
    config = dict(pipe.scheduler.config)
    overrides = {}
    if shift is not None:
        overrides["flow_shift" if "flow_shift" in config else "shift"] = shift
    pipe.scheduler = type(pipe.scheduler).from_config(config, **overrides)


def frame_problem(num_frames: int, step: int, family: str) -> str | None:
    """``num_frames`` must be ``step * k + 1`` for a family whose VAE compresses time by ``step``."""
    if (num_frames - 1) % step:
        lower = (num_frames - 1) // step * step + 1
        return f"num_frames {num_frames}: {family} renders {step}k+1 frames (e.g. {lower} or {lower + step})"
    return None


def size_problem(width: int, height: int, multiple: int, family: str) -> str | None:
    if width % multiple or height % multiple:
        return f"width x height {width}x{height}: {family} needs multiples of {multiple}"
    return None


def render(pipe, image, params: dict, seed: int, device: str, **extra) -> torch.Tensor:
    """The one call of a prompted image-to-video pipeline, as plain diffusers writes it, with the family's ``extra``
    arguments: (F, 3, H, W) floats in [0, 1]. The seed reaches the pipeline as one generator on the device."""
    import torch

    fresh_scheduler(pipe, params.get("shift"))
    generator = torch.Generator(device).manual_seed(seed)
    with torch.inference_mode():
        return pipe(
            image,
            prompt=params["prompt"],
            negative_prompt=params["negative_prompt"],
            height=params["height"],
            width=params["width"],
            num_frames=params["num_frames"],
            num_inference_steps=params["num_inference_steps"],
            guidance_scale=params["guidance_scale"],
            generator=generator,
            output_type="pt",
            **extra,
        ).frames[0]


def video_flops(
    step_flops: Callable[[int], float], decode_flops: Callable[[], float], steps: int, guidance_scale: float
) -> dict[str, float]:
    """FLOPs of one video: the transformer at every step on the branches the pipeline runs (both classifier-free
    guidance halves when ``guidance_scale`` > 1) and the VAE decode once."""
    step = step_flops(2 if guidance_scale > 1 else 1)
    decode = decode_flops()
    return {"transformer_step": step, "steps": steps, "vae_decode": decode, "total": step * steps + decode}
