"""Load a StableVideoDiffusionPipeline: the embedded tiny model, a local directory, a hub id or an object-store URL.

The tiny model is built from the real diffusers/transformers classes with shapes that mirror SVD's ratios (VAE
scale factor 8, 4 latent channels, a temporal decoder), randomly initialised from a fixed seed, and saved once in
diffusers format under the cache so every process on a node loads the same weights.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from svdbatch.model import svd
from svdbatch.model.cache import publish_folder, remote_copy
from svdbatch.model.families import FAMILIES, TINY_SOURCES
from svdbatch.model.identity import (
    ModelError,
    cache_root,
    hub_cache,
    is_remote,
    local_folder,
    looks_local,
    pick_weights,
)
from svdbatch.spec.config import TINY_MODEL, TINY_MODELS, ModelSpec

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def quiet_libraries() -> None:
    """Silence warnings that say nothing to a user of svdbatch (deprecations, optional backends, progress bars)."""
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*torchvision.*")
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("transformers").setLevel(logging.ERROR)


# The embedded tiny model's components: SVD's real classes at toy size. A 4-level VAE (scale factor 8, like SVD's)
# and 2 UNet heads keep it fast on a CPU.
TINY_UNET = dict(
    sample_size=16,
    in_channels=8,
    out_channels=4,
    down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
    up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
    block_out_channels=(32, 64),
    layers_per_block=1,
    cross_attention_dim=32,
    num_attention_heads=2,
    num_frames=8,
    addition_time_embed_dim=32,
    projection_class_embeddings_input_dim=3 * 32,
)
TINY_VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=["DownEncoderBlock2D"] * 4,
    block_out_channels=[32, 32, 64, 64],
    layers_per_block=1,
    latent_channels=4,
)
# SVD's pipeline resizes the CLIP input to 224x224 itself, so the tiny encoder keeps image_size=224.
TINY_IMAGE_ENCODER = dict(
    hidden_size=32,
    projection_dim=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=37,
    image_size=224,
    patch_size=32,
)
TINY_SCHEDULER = dict(
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    interpolation_type="linear",
    num_train_timesteps=1000,
    prediction_type="v_prediction",
    sigma_max=700.0,
    sigma_min=0.002,
    steps_offset=1,
    timestep_spacing="leading",
    timestep_type="continuous",
    use_karras_sigmas=True,
)


def build_svd_pipeline(unet: dict, vae: dict, image_encoder: dict, device: str | None = None, dtype=None):
    """A StableVideoDiffusionPipeline from its components' configs, random weights drawn in this order: UNet, VAE,
    image encoder (made on ``device`` and each cast to ``dtype`` as it is made, when given), with SVD's own scheduler
    (``TINY_SCHEDULER``'s settings)."""
    from diffusers import (
        AutoencoderKLTemporalDecoder,
        EulerDiscreteScheduler,
        StableVideoDiffusionPipeline,
        UNetSpatioTemporalConditionModel,
    )
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    def made(module):
        return module if dtype is None else module.to(dtype)

    with torch.device(device) if device else contextlib.nullcontext():
        built_unet = made(UNetSpatioTemporalConditionModel(**unet))
        built_vae = made(AutoencoderKLTemporalDecoder(**vae))
        encoder = made(CLIPVisionModelWithProjection(CLIPVisionConfig(**image_encoder)))
    return StableVideoDiffusionPipeline(
        vae=built_vae,
        image_encoder=encoder,
        unet=built_unet,
        scheduler=EulerDiscreteScheduler(**TINY_SCHEDULER),
        feature_extractor=CLIPImageProcessor(crop_size=224, size=224),
    )


def build_tiny_pipeline():
    """The embedded default: real SVD classes at toy size (TINY_*), deterministic random weights."""
    quiet_libraries()
    torch.manual_seed(0)  # the weights are drawn in this order: UNet, VAE, image encoder
    return build_svd_pipeline(TINY_UNET, TINY_VAE, TINY_IMAGE_ENCODER)


def build_svd_xt(device: str, dtype: torch.dtype):
    """SVD-XT's architecture (stabilityai/stable-video-diffusion-img2vid-xt) with random weights, made on ``device``
    in ``dtype``: what the benchmarks time without downloading weights (random weights cost the same FLOPs)."""
    from svdbatch.model.flops import SVD_XT_IMAGE_ENCODER, SVD_XT_UNET, SVD_XT_VAE

    return build_svd_pipeline(SVD_XT_UNET, SVD_XT_VAE, SVD_XT_IMAGE_ENCODER, device, dtype)


def ensure_tiny_model(source: str = TINY_MODEL) -> Path:
    """Build an embedded tiny pipeline (``svdbatch:tiny``, ``-wan``, ``-ltx``) once per node; its diffusers folder."""
    family = TINY_SOURCES[source]
    build = build_tiny_pipeline if family is svd else family.build_tiny
    quiet_libraries()
    return publish_folder(
        cache_root() / "models" / family.TINY_VERSION,
        lambda folder: build().save_pretrained(folder, safe_serialization=True),
    )


def resolve_source(spec: ModelSpec, options: dict[str, Any] | None = None) -> str:
    """A path or hub id diffusers can load, fetching to the node cache where needed."""
    if spec.source in TINY_MODELS:
        return str(ensure_tiny_model(spec.source))
    if is_remote(spec.source):
        return str(remote_copy(spec.source, options or {}, spec.variant))
    if looks_local(spec.source) or Path(spec.source).exists():
        return str(local_folder(spec))
    return spec.source


def unet_misfit(expected: dict[str, torch.Tensor], given: dict[str, torch.Tensor]) -> str | None:
    """Why ``given`` weights cannot replace a UNet's ``expected`` state dict (a few keys, the first shape), or None."""
    missing, unexpected = sorted(expected.keys() - given.keys()), sorted(given.keys() - expected.keys())
    if missing or unexpected:
        return "; ".join(
            f"{len(keys)} {kind} keys ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})"
            for kind, keys in (("missing", missing), ("unexpected", unexpected))
            if keys
        )
    for key, tensor in expected.items():
        if given[key].shape != tensor.shape:
            return f"{key} is {list(given[key].shape)} there, {list(tensor.shape)} in model.source's UNet"
    return None


def load_unet_weights(unet, path: str, label: str, variant: str | None) -> None:
    """Load a UNet's weights from ``path`` (one .safetensors file or a UNet folder) over ``unet``, all or nothing."""
    from safetensors.torch import load_file

    local = Path(path)
    files = [local] if local.is_file() else [local / name for name in pick_weights(os.listdir(local), variant)]
    weights: dict[str, torch.Tensor] = {}
    for file in files:
        try:
            weights.update(load_file(file))
        except Exception as error:  # noqa: BLE001 - a damaged or foreign file is fatal, named in one line
            raise ModelError(f"model.unet {label}: {file.name} is not a safetensors file ({error})") from error
    problem = unet_misfit(unet.state_dict(), weights)
    if problem:
        raise ModelError(f"model.unet {label}: does not fit model.source's UNet: {problem}")
    unet.load_state_dict(weights)


def pick_dtype(spec: ModelSpec, device: str) -> torch.dtype:
    if spec.dtype == "auto":
        return torch.float16 if device.startswith("cuda") else torch.float32
    return DTYPES[spec.dtype]


def dtype_name(dtype: torch.dtype) -> str:
    return {value: key for key, value in DTYPES.items()}[dtype]


def applied_options(spec: ModelSpec, device: str) -> dict[str, Any]:
    """The performance options as actually applied on this device (CUDA-only ones are off on the CPU)."""
    on_cuda = device.startswith("cuda")
    return {
        "variant": spec.variant,
        "compile_unet": spec.compile_unet,
        "forward_chunking": spec.forward_chunking,
        "channels_last": on_cuda and spec.channels_last,
        "allow_tf32": on_cuda and spec.allow_tf32,
        "cpu_offload": on_cuda and spec.cpu_offload,
        "step_cache": spec.step_cache.model_dump() if spec.step_cache.enabled else None,
        "unet": spec.unet,
        "scheduler": None if spec.scheduler.is_default else spec.scheduler.model_dump(),
    }


def load_pipeline(spec: ModelSpec, device: str, path: str, unet: str | None = None):
    """Load once per actor from ``resolve_source``'s path (and ``resolve_unet``'s), set the sampler, apply the GPU
    options from the spec."""
    quiet_libraries()
    from diffusers import DiffusionPipeline

    from svdbatch.model.sampler import use_sampler

    dtype = pick_dtype(spec, device)
    try:
        pipe = DiffusionPipeline.from_pretrained(
            path, torch_dtype=dtype, variant=spec.variant, use_safetensors=True, cache_dir=hub_cache()
        )
    except Exception as error:  # noqa: BLE001 - every load failure is fatal and reported the same way
        raise ModelError(f"model.source {spec.source}: cannot load ({type(error).__name__}: {error})") from error
    pipeline = type(pipe).__name__
    if pipeline not in FAMILIES:
        supported = ", ".join(FAMILIES)
        raise ModelError(f"model.source {spec.source}: {pipeline} is not supported (svdbatch renders {supported})")
    if FAMILIES[pipeline] is not svd:
        refuse_unet_options(spec, pipeline)
        return configure(pipe, spec, device)
    if unet:
        load_unet_weights(pipe.unet, unet, spec.unet, spec.variant)
    use_sampler(pipe, spec.scheduler)
    return configure(pipe, spec, device)


def refuse_unet_options(spec: ModelSpec, pipeline: str) -> None:
    """The options that act on SVD's UNet (step cache, consistency sampler, UNet weights, compile, chunking) fail in
    one line for a model without one, instead of being ignored."""
    names = ("unet", "compile_unet", "forward_chunking")
    used = [f"model.{name}" for name in names if getattr(spec, name)]
    used += ["model.step_cache"] if spec.step_cache.enabled else []
    used += ["model.scheduler"] if not spec.scheduler.is_default else []
    if used:
        only = "StableVideoDiffusionPipeline only"
        raise ModelError(f"{', '.join(used)}: {only}; model.source {spec.source} is {pipeline}")


def configure(pipe, spec: ModelSpec, device: str):
    """Apply the spec's performance options and move the pipeline to its device."""
    pipe.set_progress_bar_config(disable=True)
    options = applied_options(spec, device)
    if options["allow_tf32"]:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if options["forward_chunking"]:
        pipe.unet.enable_forward_chunking()
    if options["channels_last"] and hasattr(pipe, "unet"):  # Wan and LTX: transformers, no convolutional UNet
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
    if options["cpu_offload"]:
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device)
    if options["compile_unet"]:
        pipe.unet = torch.compile(pipe.unet)
    return pipe
