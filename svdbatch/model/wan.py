"""The Wan image-to-video family (diffusers' WanImageToVideoPipeline: Wan 2.1 I2V, Wan 2.2 TI2V 5B and I2V A14B).

Conditioning: the image, a prompt and a negative prompt. Frames come in 4k+1 (the VAE compresses time by 4) at
widths and heights that are multiples of the VAE's spatial factor times the transformer's patch (8 x 2 for Wan 2.1,
16 x 2 for Wan 2.2's VAE). One item per call: the pipeline takes one image.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from svdbatch.model import family
from svdbatch.model.family import frame_problem, render, size_problem

if TYPE_CHECKING:
    import torch

NAME = "wan"
PIPELINE = "WanImageToVideoPipeline"
TINY_SOURCE = "svdbatch:tiny-wan"
TINY_VERSION = "tiny-wan-v1"
FRAME_STEP = 4
PROMPTS = True
BATCHED = False  # one image per call (the pipeline takes one), with the item's own generator
GUIDANCE_SCALE = 5.0  # the pipeline's default guidance_scale
# The embedded tiny model's generation seconds on the 2-core machine (docs/benchmarks.md: the fastest of 8 calls
# under load), which svdbatch plan scales by pixels x frames x steps for a job on it.
TINY_MEASURED = {"width": 128, "height": 64, "num_frames": 9, "num_inference_steps": 4}
TINY_SECONDS = 0.21
TEXT_TOKENS = 512  # the pipeline's max_sequence_length: longer prompts are truncated by its tokenizer
IMAGE_TOKENS = 257  # CLIP ViT-H/14 at 224: 256 patches + the class token (Wan 2.1 I2V, Wan 2.2 I2V)

# The embedded tiny model: diffusers' own test sizes for the transformer, VAE and CLIP encoder.
TINY_TRANSFORMER = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=2,
    attention_head_dim=12,
    in_channels=36,
    out_channels=16,
    text_dim=32,
    freq_dim=256,
    ffn_dim=32,
    num_layers=2,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    rope_max_seq_len=32,
    image_dim=4,
)
TINY_VAE = dict(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True])
TINY_IMAGE_ENCODER = dict(
    hidden_size=4,
    projection_dim=4,
    num_hidden_layers=2,
    num_attention_heads=2,
    image_size=32,
    intermediate_size=16,
    patch_size=1,
)

# Full-size configurations (the Wan-AI/*-Diffusers repositories' transformer and VAE configs) for FLOP counts.
WAN21_I2V_14B = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=40,
    attention_head_dim=128,
    in_channels=36,
    out_channels=16,
    text_dim=4096,
    freq_dim=256,
    ffn_dim=13824,
    num_layers=40,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    eps=1e-6,
    image_dim=1280,
    added_kv_proj_dim=5120,
    rope_max_seq_len=1024,
)
WAN21_VAE: dict = {}  # AutoencoderKLWan's defaults are Wan 2.1's VAE
WAN22_TI2V_5B = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=24,
    attention_head_dim=128,
    in_channels=48,
    out_channels=48,
    text_dim=4096,
    freq_dim=256,
    ffn_dim=14336,
    num_layers=30,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    eps=1e-6,
    rope_max_seq_len=1024,
)
WAN22_VAE = dict(
    base_dim=160,
    decoder_base_dim=256,
    z_dim=48,
    dim_mult=[1, 2, 4, 4],
    num_res_blocks=2,
    temperal_downsample=[False, True, True],
    is_residual=True,
    in_channels=12,
    out_channels=12,
    patch_size=2,
    scale_factor_spatial=16,
    scale_factor_temporal=4,
)

# The full-size configurations svdbatch counts (plan, benchmarks/family_flops.py) at their documented sizes.
FULL_SIZE = {
    "Wan 2.1 I2V 14B": dict(
        transformer=WAN21_I2V_14B, vae=WAN21_VAE, width=832, height=480, num_frames=81, steps=50, guidance_scale=5.0
    ),
    "Wan 2.2 TI2V 5B": dict(
        transformer=WAN22_TI2V_5B, vae=WAN22_VAE, width=1280, height=704, num_frames=121, steps=50, guidance_scale=5.0
    ),
}


def build_tiny():
    """Real Wan 2.1 I2V classes at diffusers' test sizes, deterministic random weights, a local tokenizer."""
    import torch
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanImageToVideoPipeline
    from diffusers import WanTransformer3DModel
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel, UMT5Config, UMT5EncoderModel

    from svdbatch.model.text import build_text_encoder, build_tokenizer

    tokenizer = build_tokenizer()
    torch.manual_seed(0)  # the weights are drawn in this order: text encoder, transformer, VAE, image encoder
    text_encoder = build_text_encoder(UMT5Config, UMT5EncoderModel, len(tokenizer))
    transformer = WanTransformer3DModel(**TINY_TRANSFORMER)
    vae = AutoencoderKLWan(**TINY_VAE)
    image_encoder = CLIPVisionModel(CLIPVisionConfig(**TINY_IMAGE_ENCODER))
    return WanImageToVideoPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
        image_processor=CLIPImageProcessor(crop_size=32, size=32),
        image_encoder=image_encoder,
        transformer=transformer,
    )


def spatial_multiple(pipe) -> int:
    return pipe.vae_scale_factor_spatial * pipe.transformer.config.patch_size[1]


def problems(params: dict, multiple: int = 16) -> list[str]:
    """What is wrong with a render's parameters for Wan, one line each."""
    found = [
        frame_problem(params["num_frames"], FRAME_STEP, NAME),
        size_problem(params["width"], params["height"], multiple, NAME),
    ]
    if params.get("shift") is not None and params["shift"] <= 0:
        found.append(f"shift {params['shift']}: must be above 0")
    return [problem for problem in found if problem]


def pipe_problems(pipe, params: dict) -> list[str]:
    """``problems`` with the loaded pipeline's own size multiple."""
    return problems(params, spatial_multiple(pipe))


def call(pipe, image, params: dict, seed: int, device: str) -> torch.Tensor:
    """The one Wan call, as plain diffusers writes it: (F, 3, H, W) floats in [0, 1]."""
    return render(pipe, image, params, seed, device)


def transformer_inputs(model, width: int, height: int, frames: int, vae_spatial: int, branches: int, device) -> dict:
    """One transformer call's arguments at a video's latent size (``branches`` 2: both classifier-free guidance
    halves). A model without an image encoder (Wan 2.2 TI2V) takes one timestep per token (``expand_timesteps``)."""
    import torch

    config = model.config
    latent_frames = (frames - 1) // FRAME_STEP + 1
    shape = (branches, config.in_channels, latent_frames, height // vae_spatial, width // vae_spatial)
    tokens = latent_frames * (shape[3] // config.patch_size[1]) * (shape[4] // config.patch_size[2])
    image_dim = config.image_dim
    image = torch.zeros(branches, IMAGE_TOKENS, image_dim, device=device) if image_dim else None
    return dict(
        hidden_states=torch.zeros(shape, device=device),
        timestep=torch.zeros((branches,) if image_dim else (branches, tokens), device=device),
        encoder_hidden_states=torch.zeros(branches, TEXT_TOKENS, config.text_dim, device=device),
        encoder_hidden_states_image=image,
    )


def transformer_flops(config: dict, width: int, height: int, frames: int, vae_spatial: int, branches: int) -> float:
    """One transformer call at a video's latent size, counted on the meta device."""
    from diffusers import WanTransformer3DModel

    from svdbatch.model.flops import counted, on_meta

    model = on_meta(WanTransformer3DModel, config)
    args = transformer_inputs(model, width, height, frames, vae_spatial, branches, "meta")
    return counted(lambda: model(**args))


def vae_decode_flops(config: dict, width: int, height: int, frames: int) -> float:
    import torch
    from diffusers import AutoencoderKLWan

    from svdbatch.model.flops import counted, on_meta

    vae = on_meta(AutoencoderKLWan, config)
    spatial = vae.config.scale_factor_spatial
    latents = torch.zeros(1, vae.config.z_dim, (frames - 1) // FRAME_STEP + 1, height // spatial, width // spatial)
    return counted(lambda: vae.decode(latents.to("meta")))


def video_flops(
    transformer: dict, vae: dict, width: int, height: int, frames: int, steps: int, guidance_scale: float
) -> dict[str, float]:
    """FLOPs of one video at a full-size configuration (``FULL_SIZE``)."""
    spatial = vae.get("scale_factor_spatial", 8)
    return family.video_flops(
        lambda branches: transformer_flops(transformer, width, height, frames, spatial, branches),
        lambda: vae_decode_flops(vae, width, height, frames),
        steps,
        guidance_scale,
    )
