"""FLOPs of one SVD video, counted without a GPU: the real diffusers modules on the meta device.

``svdbatch plan`` turns these counts into GPU time, and the step-cache benchmark compares them with the cache off
and on. The configs are those of stabilityai/stable-video-diffusion-img2vid-xt.
"""

from __future__ import annotations

import inspect

import torch

from svdbatch.model.step_cache import cached_steps
from svdbatch.spec.config import StepCacheSpec, unet_branches

SVD_XT_UNET = dict(
    sample_size=96,
    in_channels=8,
    out_channels=4,
    down_block_types=("CrossAttnDownBlockSpatioTemporal",) * 3 + ("DownBlockSpatioTemporal",),
    up_block_types=("UpBlockSpatioTemporal",) + ("CrossAttnUpBlockSpatioTemporal",) * 3,
    block_out_channels=(320, 640, 1280, 1280),
    addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=768,
    layers_per_block=2,
    cross_attention_dim=1024,
    transformer_layers_per_block=1,
    num_attention_heads=(5, 10, 20, 20),
    num_frames=25,
)
SVD_XT_VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=["DownEncoderBlock2D"] * 4,
    block_out_channels=[128, 256, 512, 512],
    layers_per_block=2,
    latent_channels=4,
    sample_size=768,
    scaling_factor=0.18215,
    force_upcast=True,
)
SVD_XT_IMAGE_ENCODER = dict(  # CLIP ViT-H/14's vision tower: not counted (once per video, not per step)
    hidden_size=1280,
    intermediate_size=5120,
    num_hidden_layers=32,
    num_attention_heads=16,
    patch_size=14,
    image_size=224,
    projection_dim=1024,
    hidden_act="gelu",
)
LATENT_SCALE = 8


def on_meta(module_class, config: dict):
    """The module built on the meta device from ``config``: its constructor arguments, or a model's config.json
    (whose other keys, such as ``_class_name``, are left out)."""
    accepted = inspect.signature(module_class.__init__).parameters
    arguments = {name: value for name, value in config.items() if name in accepted}
    # Building under the meta device allocates nothing; one mixing parameter is still made on the CPU, hence .to().
    with torch.device("meta"):
        return module_class(**arguments).to("meta")


def counted(call) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        call()
    return float(counter.get_total_flops())


def unet_step_flops(width: int, height: int, frames: int, config: dict = SVD_XT_UNET, batch: int = 2):
    """(full step, cached step) FLOPs of one UNet call; ``batch`` 2 is one video with classifier-free guidance."""
    from diffusers import UNetSpatioTemporalConditionModel

    unet = on_meta(UNetSpatioTemporalConditionModel, config)
    latents = torch.zeros(batch, frames, config["in_channels"], height // LATENT_SCALE, width // LATENT_SCALE)
    args = (
        latents.to("meta"),
        torch.tensor(1.0, device="meta"),
        torch.zeros(batch, 1, config["cross_attention_dim"], device="meta"),
        torch.zeros(batch, 3, device="meta"),
    )
    with cached_steps(unet, StepCacheSpec(enabled=True, interval=2)):  # step 0 in full, step 1 cached
        full = counted(lambda: unet(*args))
        cached = counted(lambda: unet(*args))
    return full, cached


def unet_video_flops(
    width: int,
    height: int,
    frames: int,
    steps: int,
    max_guidance_scale: float,
    cache: StepCacheSpec,
    config=SVD_XT_UNET,
) -> float:
    """UNet FLOPs of one video: a call a step on the branches diffusers runs (one when guidance is off)."""
    full, cached = unet_step_flops(width, height, frames, config, batch=unet_branches(max_guidance_scale))
    in_full = cache.full_steps(steps)
    return full * in_full + cached * (steps - in_full)


def vae_decode_flops(width: int, height: int, frames: int, config: dict = SVD_XT_VAE) -> float:
    from diffusers import AutoencoderKLTemporalDecoder

    vae = on_meta(AutoencoderKLTemporalDecoder, config)
    latents = torch.zeros(frames, config["latent_channels"], height // LATENT_SCALE, width // LATENT_SCALE)
    return counted(lambda: vae.decode(latents.to("meta"), num_frames=frames))
