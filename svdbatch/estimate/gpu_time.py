"""The GPU-time estimate of ``svdbatch plan``, free of Ray and torch: SVD-XT's FLOPs per video (counted once by
flops.py on the meta device), the share of peak that published SVD-XT figures reach, the embedded tiny model's
measured seconds, and wall time in whole rounds of one video per GPU. The run record (record.py) and ``svdbatch tune``
read the FLOPs per video from here too.
"""

from __future__ import annotations

import math

from svdbatch.spec.config import TINY_MODEL, TINY_MODELS, JobSpec, StepCacheSpec, unet_branches

# Peak dense (no sparsity) fp16/bf16 tensor-core TFLOP/s from NVIDIA's datasheets (fp32 accumulate where the sheet
# gives two figures; A10G is listed with the A10's figure). Any other GPU: --tflops.
GPU_TFLOPS = {
    "H200": 989.0,
    "H100": 989.0,
    "H100-PCIe": 756.0,
    "A100": 312.0,
    "A100-40": 312.0,
    "A100-80": 312.0,
    "L40S": 362.0,
    "A10G": 125.0,
    "L4": 121.0,
    "RTX4090": 165.0,
    "V100": 125.0,
    "T4": 65.0,
}
# SVD-XT at 1024x576, 25 frames, counted by svdbatch.model.flops on the meta device: one UNet call on both CFG halves,
# in full and as a cached step (tests/test_unit_step_cache.py checks these against a fresh count), and the VAE decode.
# With guidance off (max_guidance_scale <= 1) diffusers runs one half: ``unet_branches``.
UNET_FLOP_PER_STEP = 159.9e12
UNET_FLOP_CACHED_STEP = 66.6e12
VAE_FLOP = 173.6e12
REFERENCE = {"width": 1024, "height": 576, "num_frames": 25, "num_inference_steps": 25, "max_guidance_scale": 3.0}
REFERENCE_PIXELS_FRAMES = REFERENCE["width"] * REFERENCE["height"] * REFERENCE["num_frames"]
# Published SVD-XT seconds per video (1024x576, 25 frames, 25 steps) that calibrate the share of peak reached.
CALIBRATION = (
    ("plain diffusers on an A100", "A100", 60.0),
    ("TensorRT on an H100 PCIe", "H100-PCIe", 22.6),
    ("TensorRT on an A100 SXM", "A100", 32.2),
)
# The embedded tiny model on a 2-core CPU: a run of 256x144, 8 frames, 3 steps averaged 4.04 s of generation per
# video. Its time grows with pixels x frames x steps (64x64x8x4: 0.63 s, 128x128x8x2: 1.2 s, 256x144x14x2: 5.3 s).
TINY_MEASURED = {"width": 256, "height": 144, "num_frames": 8, "num_inference_steps": 3}
TINY_SECONDS = 4.04


def _pixel_frame_steps(item: dict) -> int:
    return item["width"] * item["height"] * item["num_frames"] * item["num_inference_steps"]


def tiny_seconds(item: dict, measured: dict = TINY_MEASURED, seconds: float = TINY_SECONDS) -> float:
    """Seconds of one video of an embedded tiny model (SVD's unless told) on a 2-core CPU: the measured one, scaled."""
    return seconds * _pixel_frame_steps(item) / _pixel_frame_steps(measured)


def _scale(item: dict) -> float:
    return item["width"] * item["height"] * item["num_frames"] / REFERENCE_PIXELS_FRAMES


def unet_flop(item: dict, cache: StepCacheSpec) -> float:
    """SVD-XT UNet FLOPs of one video: full and cached steps, on one branch a step when guidance is off."""
    steps = item["num_inference_steps"]
    full = cache.full_steps(steps)
    both = UNET_FLOP_PER_STEP * full + UNET_FLOP_CACHED_STEP * (steps - full)
    return both * unet_branches(item["max_guidance_scale"]) / 2 * _scale(item)


def video_flop(item: dict, cache: StepCacheSpec) -> float:
    """SVD-XT FLOPs of one video: the UNet's (``unet_flop``) and the VAE decode, scaled by pixels x frames."""
    return unet_flop(item, cache) + VAE_FLOP * _scale(item)


def flop_record(spec: JobSpec) -> dict | None:
    """What one video at the spec's render defaults costs, for the run record; None for the tiny model, whose
    FLOPs are not SVD-XT's."""
    if spec.model.source in TINY_MODELS:
        return None
    render = spec.render.model_dump()
    unet = unet_flop(render, spec.model.step_cache)
    return {
        "architecture": "SVD-XT",
        "unet_branches": unet_branches(render["max_guidance_scale"]),
        "unet_pflop_per_video": round(unet / 1e15, 4),
        "pflop_per_video": round(video_flop(render, spec.model.step_cache) / 1e15, 4),
    }


def calibrated_shares() -> list[float]:
    """The share of peak each published figure reaches, given the FLOP count of the reference video."""
    flop = video_flop(REFERENCE, StepCacheSpec())
    return [flop / (seconds * GPU_TFLOPS[gpu] * 1e12) for _, gpu, seconds in CALIBRATION]


def utilisation() -> tuple[float, float]:
    """(optimistic, typical) share of peak: the best published figure and the plain-diffusers one."""
    shares = calibrated_shares()
    return max(shares), shares[0]


def seconds_per_video(item: dict, tflops: float, cache: StepCacheSpec) -> tuple[float, float]:
    """(optimistic, typical) seconds of one video on a GPU of ``tflops`` peak dense fp16 TFLOP/s."""
    flop = video_flop(item, cache)
    return tuple(flop / (tflops * 1e12 * share) for share in utilisation())


def span(fast: float, typical: float) -> str:
    return duration(typical) if fast == typical else f"{duration(fast)} to {duration(typical)}"


def duration(seconds: float) -> str:
    """Hours, minutes or seconds, whichever reads best: a small job is never '0.0 hours'."""
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.1f} s"


def estimate_basis(spec: JobSpec, gpu: str, tflops: float, measured_seconds: float | None) -> str:
    """The assumption behind the estimate, printed under it."""
    if measured_seconds:
        return f"basis: {measured_seconds:g} s per video, measured (--seconds-per-video)"
    if spec.model.source == TINY_MODEL:
        measured = TINY_MEASURED
        return (
            f"basis: the embedded tiny model (random weights) took {TINY_SECONDS:g} s per video on a 2-core CPU at "
            f"{measured['width']}x{measured['height']}, {measured['num_frames']} frames, "
            f"{measured['num_inference_steps']} steps; scaled by pixels x frames x steps"
        )
    render = spec.render.model_dump()
    steps = render["num_inference_steps"]
    full = spec.model.step_cache.full_steps(steps)
    fast, typical = utilisation()
    published = "; ".join(
        f"{name} {seconds:g} s = {share:.0%}"
        for (name, _, seconds), share in zip(CALIBRATION, calibrated_shares(), strict=True)
    )
    branches = unet_branches(render["max_guidance_scale"])
    guidance = "2 branches a step: guidance on" if branches == 2 else "1 branch a step: guidance off"
    return (
        f"basis: {video_flop(render, spec.model.step_cache) / 1e15:.2f} PFLOP per video at the spec's render "
        f"defaults ({full} of {steps} UNet steps in full, {guidance}; UNet "
        f"{unet_flop(render, spec.model.step_cache) / 1e15:.2f} PFLOP) at {fast:.0%} (optimistic) to {typical:.0%} "
        "(typical) of "
        f"{gpu}'s {tflops:g} dense fp16 TFLOP/s; SVD-XT published: {published}"
    )


def wall_seconds(shapes: list[dict], per_video: list[float], gpus: int) -> float:
    """Wall time on ``gpus`` GPUs, one video per GPU at a time: a job of fewer videos than GPUs still takes one
    video's time, and 9 videos on 8 GPUs take two."""
    return sum(math.ceil(shape["items"] / gpus) * seconds for shape, seconds in zip(shapes, per_video, strict=True))
