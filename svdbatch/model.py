"""Load a StableVideoDiffusionPipeline: the embedded tiny model, a local directory, a hub id or an object-store URL.

The tiny model is built from the real diffusers/transformers classes with shapes that mirror SVD's ratios (VAE
scale factor 8, 4 latent channels, a temporal decoder), randomly initialised from a fixed seed, and saved once in
diffusers format under the cache so every process on a node loads the same weights.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from svdbatch import storage
from svdbatch.config import TINY_MODEL, ModelSpec

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
TINY_VERSION = "tiny-svd-v1"


class ModelError(RuntimeError):
    """The model cannot be loaded: fatal for the job."""


def cache_root() -> Path:
    return Path(os.environ.get("SVDBATCH_CACHE", Path.home() / ".cache" / "svdbatch"))


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


def build_tiny_pipeline():
    """The embedded default: real SVD classes at toy size, deterministic random weights."""
    quiet_libraries()
    from diffusers import (
        AutoencoderKLTemporalDecoder,
        EulerDiscreteScheduler,
        StableVideoDiffusionPipeline,
        UNetSpatioTemporalConditionModel,
    )
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    unet = UNetSpatioTemporalConditionModel(
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
    vae = AutoencoderKLTemporalDecoder(
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4,
        block_out_channels=[32, 32, 64, 64],
        layers_per_block=1,
        latent_channels=4,
    )
    # SVD's pipeline resizes the CLIP input to 224x224 itself, so the tiny encoder keeps image_size=224.
    encoder = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=32,
            projection_dim=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=37,
            image_size=224,
            patch_size=32,
        )
    )
    scheduler = EulerDiscreteScheduler(
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
    return StableVideoDiffusionPipeline(
        vae=vae,
        image_encoder=encoder,
        unet=unet,
        scheduler=scheduler,
        feature_extractor=CLIPImageProcessor(crop_size=224, size=224),
    )


@contextlib.contextmanager
def node_lock(name: str) -> Iterator[None]:
    """An exclusive file lock shared by every process on this node, so concurrent actors wait instead of racing."""
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _publish(target: Path, fill) -> Path:
    """Fill a temporary folder next to ``target`` and rename it into place: a partial copy is never visible."""
    if (target / "model_index.json").exists():
        return target
    with node_lock(target.name):
        if (target / "model_index.json").exists():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        try:
            fill(staging)
            if target.exists():
                shutil.rmtree(target)
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def ensure_tiny_model() -> Path:
    """Build the tiny pipeline once per node and return its diffusers directory."""
    return _publish(
        cache_root() / "models" / TINY_VERSION,
        lambda folder: build_tiny_pipeline().save_pretrained(folder, safe_serialization=True),
    )


def _remote_copy(source: str, options: dict[str, Any]) -> Path:
    """Copy a diffusers directory from object storage once per node; only safetensors and configs are copied."""
    digest = hashlib.sha256(source.rstrip("/").encode()).hexdigest()[:16]
    fs, root = storage.filesystem(source, options)

    def fill(folder: Path) -> None:
        for path in storage.retrying(lambda: fs.find(root)):
            relative = os.path.relpath(path, root)
            if not relative.endswith((".json", ".safetensors", ".txt")):
                continue
            destination = folder / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            storage.retrying(lambda path=path, destination=destination: fs.get_file(path, str(destination)))

    return _publish(cache_root() / "models" / f"remote-{digest}", fill)


def _is_remote(source: str) -> bool:
    return "://" in source and storage.scheme(source) != "file"


def _local_folder(spec: ModelSpec) -> Path:
    """A local model folder, checked to be a diffusers pipeline."""
    local = Path(spec.source.removeprefix("file://")).expanduser()
    if not (local / "model_index.json").exists():
        raise ModelError(f"model.source {spec.source}: not a diffusers pipeline folder (no model_index.json)")
    return local


def _looks_local(source: str) -> bool:
    """A path rather than a hub id ("org/name"): absolute, relative with ./ or ../, home-relative, or file://."""
    return source.startswith(("/", "./", "../", "~", "file://"))


def resolve_source(spec: ModelSpec, options: dict[str, Any] | None = None) -> str:
    """A path or hub id diffusers can load, fetching to the node cache where needed."""
    if spec.source == TINY_MODEL:
        return str(ensure_tiny_model())
    if _is_remote(spec.source):
        return str(_remote_copy(spec.source, options or {}))
    if _looks_local(spec.source) or Path(spec.source).exists():
        return str(_local_folder(spec))
    return spec.source


def check_source(spec: ModelSpec, options: dict[str, Any] | None = None) -> None:
    """Cheap driver-side check that the model can be found, so a typo fails before any work."""
    if spec.source == TINY_MODEL:
        return
    if _is_remote(spec.source):
        if not storage.exists(storage.join(spec.source, "model_index.json"), options):
            raise ModelError(f"model.source {spec.source}: no model_index.json there")
    elif _looks_local(spec.source):
        _local_folder(spec)


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
    }


def load_pipeline(spec: ModelSpec, device: str, options: dict[str, Any] | None = None):
    """Load once per actor, apply the GPU options from the spec, and return the ready pipeline."""
    quiet_libraries()
    from diffusers import StableVideoDiffusionPipeline

    dtype = pick_dtype(spec, device)
    path = resolve_source(spec, options)
    try:
        pipe = StableVideoDiffusionPipeline.from_pretrained(
            path, torch_dtype=dtype, variant=spec.variant, use_safetensors=True
        )
    except Exception as error:  # noqa: BLE001 - every load failure is fatal and reported the same way
        raise ModelError(f"model.source {spec.source}: cannot load ({type(error).__name__}: {error})") from None
    return configure(pipe, spec, device)


def configure(pipe, spec: ModelSpec, device: str):
    """Apply the spec's performance options and move the pipeline to its device."""
    pipe.set_progress_bar_config(disable=True)
    options = applied_options(spec, device)
    if options["allow_tf32"]:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if options["forward_chunking"]:
        pipe.unet.enable_forward_chunking()
    if options["channels_last"]:
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
    if options["cpu_offload"]:
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device)
    if options["compile_unet"]:
        pipe.unet = torch.compile(pipe.unet)
    return pipe
