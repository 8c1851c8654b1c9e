"""The LTX-Video image-to-video family (diffusers' LTXImageToVideoPipeline).

Conditioning: the image, a prompt and a negative prompt; the frame rate is both a conditioning (RoPE scale) and the
MP4's rate. Frames come in 8k+1 at widths and heights that are multiples of 32 (the pipeline checks both).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from svdbatch.model import family
from svdbatch.model.family import frame_problem, render, size_problem

if TYPE_CHECKING:
    import torch

NAME = "ltx"
PIPELINE = "LTXImageToVideoPipeline"
TINY_SOURCE = "svdbatch:tiny-ltx"
TINY_VERSION = "tiny-ltx-v1"
FRAME_STEP = 8
SIZE_MULTIPLE = 32
PROMPTS = True
BATCHED = False  # one image per call (the pipeline takes one), with the item's own generator
GUIDANCE_SCALE = 3.0  # the pipeline's default guidance_scale
# The embedded tiny model's generation seconds on the 2-core machine (docs/benchmarks.md: the fastest of 8 calls
# under load), which svdbatch plan scales by pixels x frames x steps for a job on it.
TINY_MEASURED = {"width": 128, "height": 64, "num_frames": 9, "num_inference_steps": 4}
TINY_SECONDS = 0.98
TEXT_TOKENS = 128  # the pipeline's max_sequence_length: longer prompts are truncated by its tokenizer

# The embedded tiny model: diffusers' test sizes (a VAE compressing space and time by 4).
TINY_TRANSFORMER = dict(
    in_channels=8,
    out_channels=8,
    patch_size=1,
    patch_size_t=1,
    num_attention_heads=4,
    attention_head_dim=8,
    cross_attention_dim=32,
    num_layers=1,
    caption_channels=32,
)
TINY_VAE = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=8,
    block_out_channels=(8, 8, 8, 8),
    decoder_block_out_channels=(8, 8, 8, 8),
    layers_per_block=(1, 1, 1, 1, 1),
    decoder_layers_per_block=(1, 1, 1, 1, 1),
    spatio_temporal_scaling=(True, True, False, False),
    decoder_spatio_temporal_scaling=(True, True, False, False),
    decoder_inject_noise=(False, False, False, False, False),
    upsample_residual=(False, False, False, False),
    upsample_factor=(1, 1, 1, 1),
    timestep_conditioning=False,
    patch_size=1,
    patch_size_t=1,
    encoder_causal=True,
    decoder_causal=False,
)
# Full size: LTXVideoTransformer3DModel's and AutoencoderKLLTXVideo's defaults are LTX-Video 2B (0.9.0).
LTX_2B: dict = {}
LTX_VAE: dict = {}
LTX_SPATIAL = 32
LTX_TEMPORAL = 8
FULL_SIZE = {
    "LTX-Video 2B": dict(
        transformer=LTX_2B, vae=LTX_VAE, width=704, height=512, num_frames=121, steps=50, guidance_scale=3.0
    ),
}


def build_tiny():
    """Real LTX-Video classes at diffusers' test sizes, deterministic random weights, a local tokenizer."""
    import torch
    from diffusers import AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler, LTXImageToVideoPipeline
    from diffusers import LTXVideoTransformer3DModel
    from transformers import T5Config, T5EncoderModel

    from svdbatch.model.text import build_text_encoder, build_tokenizer

    tokenizer = build_tokenizer()
    torch.manual_seed(0)  # the weights are drawn in this order: text encoder, transformer, VAE
    text_encoder = build_text_encoder(T5Config, T5EncoderModel, len(tokenizer))
    transformer = LTXVideoTransformer3DModel(**TINY_TRANSFORMER)
    vae = AutoencoderKLLTXVideo(**TINY_VAE)
    return LTXImageToVideoPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
    )


def problems(params: dict, multiple: int = SIZE_MULTIPLE) -> list[str]:
    """What is wrong with a render's parameters for LTX, one line each."""
    found = [
        frame_problem(params["num_frames"], FRAME_STEP, NAME),
        size_problem(params["width"], params["height"], multiple, NAME),
    ]
    return [problem for problem in found if problem]


def pipe_problems(pipe, params: dict) -> list[str]:
    """``problems`` with the loaded pipeline's own size multiple."""
    return problems(params)


def call(pipe, image, params: dict, seed: int, device: str) -> torch.Tensor:
    """The one LTX call, as plain diffusers writes it: (F, 3, H, W) floats in [0, 1]."""
    return render(pipe, image, params, seed, device, frame_rate=params["fps"])


def transformer_inputs(model, width: int, height: int, frames: int, branches: int, device) -> dict:
    """One transformer call's arguments at a video's latent size (``branches`` 2: both classifier-free guidance
    halves), with the per-token timesteps image-to-video passes (the first frame's tokens are conditioning)."""
    import torch

    latent = ((frames - 1) // LTX_TEMPORAL + 1, height // LTX_SPATIAL, width // LTX_SPATIAL)
    tokens = latent[0] * latent[1] * latent[2]
    return dict(
        hidden_states=torch.zeros(branches, tokens, model.config.in_channels, device=device),
        encoder_hidden_states=torch.zeros(branches, TEXT_TOKENS, model.config.caption_channels, device=device),
        timestep=torch.zeros(branches, tokens, device=device),
        encoder_attention_mask=torch.ones(branches, TEXT_TOKENS, device=device),
        num_frames=latent[0],
        height=latent[1],
        width=latent[2],
        rope_interpolation_scale=(LTX_TEMPORAL / 25, LTX_SPATIAL, LTX_SPATIAL),
    )


def transformer_flops(config: dict, width: int, height: int, frames: int, branches: int) -> float:
    """One transformer call at a video's latent size, counted on the meta device."""
    from diffusers import LTXVideoTransformer3DModel

    from svdbatch.model.flops import counted, on_meta

    model = on_meta(LTXVideoTransformer3DModel, config)
    args = transformer_inputs(model, width, height, frames, branches, "meta")
    return counted(lambda: model(**args))


def vae_decode_flops(config: dict, width: int, height: int, frames: int) -> float:
    import torch
    from diffusers import AutoencoderKLLTXVideo

    from svdbatch.model.flops import counted, on_meta

    vae = on_meta(AutoencoderKLLTXVideo, config)
    latents = torch.zeros(
        1,
        vae.config.latent_channels,
        (frames - 1) // LTX_TEMPORAL + 1,
        height // LTX_SPATIAL,
        width // LTX_SPATIAL,
    )
    # LTX-Video 0.9.1 and later decode at a timestep (timestep_conditioning): the pipeline passes decode_timestep.
    timestep = torch.zeros(1, device="meta") if vae.config.timestep_conditioning else None
    return counted(lambda: vae.decode(latents.to("meta"), timestep, return_dict=False))


def video_flops(
    transformer: dict, vae: dict, width: int, height: int, frames: int, steps: int, guidance_scale: float
) -> dict[str, float]:
    """FLOPs of one video at a full-size configuration (``FULL_SIZE``)."""
    return family.video_flops(
        lambda branches: transformer_flops(transformer, width, height, frames, branches),
        lambda: vae_decode_flops(vae, width, height, frames),
        steps,
        guidance_scale,
    )
