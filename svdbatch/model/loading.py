"""Load a StableVideoDiffusionPipeline: the embedded tiny model, a local directory, a hub id or an object-store URL.

The tiny model is built from the real diffusers/transformers classes with shapes that mirror SVD's ratios (VAE
scale factor 8, 4 latent channels, a temporal decoder), randomly initialised from a fixed seed, and saved once in
diffusers format under the cache so every process on a node loads the same weights.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import posixpath
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from svdbatch import storage
from svdbatch.errors import UserError
from svdbatch.model import svd
from svdbatch.model.families import FAMILIES, TINY_SOURCES
from svdbatch.spec.config import TINY_MODEL, TINY_MODELS, ModelSpec

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
CONFIG_SUFFIXES = (".json", ".txt")
COPY_THREADS = 8
COPY_RECORD = "svdbatch-copy.json"
STAGE_RECORD = "svdbatch-stage.json"  # written last by `svdbatch model stage`: files, sizes, sha256
HASH_CHUNK = 8 << 20
HUB_TIMEOUT_S = 10


class ModelError(UserError, RuntimeError):
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


def build_tiny_pipeline():
    """The embedded default: real SVD classes at toy size (TINY_*), deterministic random weights."""
    quiet_libraries()
    from diffusers import (
        AutoencoderKLTemporalDecoder,
        EulerDiscreteScheduler,
        StableVideoDiffusionPipeline,
        UNetSpatioTemporalConditionModel,
    )
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)  # the weights are drawn in this order: UNet, VAE, image encoder
    unet = UNetSpatioTemporalConditionModel(**TINY_UNET)
    vae = AutoencoderKLTemporalDecoder(**TINY_VAE)
    encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**TINY_IMAGE_ENCODER))
    return StableVideoDiffusionPipeline(
        vae=vae,
        image_encoder=encoder,
        unet=unet,
        scheduler=EulerDiscreteScheduler(**TINY_SCHEDULER),
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


def _publish(target: Path, fill, marker: str = "model_index.json") -> Path:
    """Fill a temporary folder next to ``target`` and rename it into place: a partial copy is never visible.
    ``marker`` is the file whose presence says the copy is complete."""
    if (target / marker).exists():
        return target
    with node_lock(target.name):
        if (target / marker).exists():
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


def ensure_tiny_model(source: str = TINY_MODEL) -> Path:
    """Build an embedded tiny pipeline (``svdbatch:tiny``, ``-wan``, ``-ltx``) once per node; its diffusers folder."""
    family = TINY_SOURCES[source]
    build = build_tiny_pipeline if family is svd else family.build_tiny
    quiet_libraries()
    return _publish(
        cache_root() / "models" / family.TINY_VERSION,
        lambda folder: build().save_pretrained(folder, safe_serialization=True),
    )


def _weight_pattern(variant: str | None) -> re.Pattern:
    """diffusers weight file names: ``model.safetensors``, ``model.fp16.safetensors``, shards ``-00001-of-00002``."""
    infix = rf"\.{re.escape(variant)}" if variant else ""
    return re.compile(rf"^[^./]+{infix}(-\d+-of-\d+)?\.safetensors$")


def pick_weights(names: list[str], variant: str | None) -> list[str]:
    """The weight files diffusers loads from a folder's file names: the variant's, else the plain ones."""
    chosen = [name for name in names if _weight_pattern(variant).match(name)]
    if variant and not chosen:
        chosen = [name for name in names if _weight_pattern(None).match(name)]
    return chosen


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth")


def pipeline_files(names: Iterable[str], index: dict[str, Any], variant: str | None) -> tuple[list[str], list[str]]:
    """(configs, weights) that loading the pipeline reads, chosen from a folder's relative file names and its
    model_index.json: the index, each component's .json/.txt files and its weights in ``variant`` (else the plain
    ones, as diffusers falls back). Only safetensors load; a component with other weights only fails here.
    """
    names = list(names)
    configs, weights = ["model_index.json"], []
    components = [name for name, value in index.items() if isinstance(value, list) and value and value[0]]
    for component in components:
        inside = {path.split("/", 1)[1]: path for path in names if path.startswith(f"{component}/")}
        configs += [path for name, path in inside.items() if name.endswith(CONFIG_SUFFIXES)]
        chosen = pick_weights(list(inside), variant)
        found = sorted(name for name in inside if name.endswith(WEIGHT_SUFFIXES))
        if found and not chosen:
            wanted = f"'{variant}' or plain" if variant else "plain"
            raise ModelError(
                f"{component}/: no {wanted} .safetensors weights (found {', '.join(found[:3])}); svdbatch loads "
                "safetensors only: check model.variant"
            )
        weights += [inside[name] for name in chosen]
    return configs, weights


def sha256_stream(handle) -> str:
    digest = hashlib.sha256()
    while chunk := handle.read(HASH_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    with open(path, "rb") as handle:
        return sha256_stream(handle)


def _hash_files(digest, files: dict[str, dict[str, Any]]) -> None:
    """Add listed files to an identity: each one's path, version (ETag / version id, or size + mtime) and size."""
    for path in sorted(files):
        digest.update(f"{path}\0{storage.object_version(files[path])}\0{files[path]['size']}\n".encode())


@dataclass(frozen=True)
class ModelFiles:
    """What a pipeline folder holds that the pipeline loads, and the identity of exactly those files."""

    configs: dict[str, bytes]
    weights: dict[str, dict[str, Any]]
    identity: str

    @property
    def bytes(self) -> int:
        return sum(len(data) for data in self.configs.values()) + sum(info["size"] for info in self.weights.values())


def model_files(fs, root: str, variant: str | None, label: str | None = None) -> ModelFiles:
    """From ONE listing: model_index.json, the configs and the variant's weight files of each component it names.

    Other files (other variants, single-file checkpoints, stray folders) are neither copied nor part of the
    identity. A component without files of the requested variant uses its plain weights, as diffusers does.
    The identity hashes the configs' content and each weight file's version (ETag / version id, or size + mtime).
    Errors start with ``label`` (default: the folder).
    """
    root = root.rstrip("/")
    label = label or root
    fs.invalidate_cache(root)  # a listing cached by this process would hide new weights
    found = storage.retrying(lambda: fs.find(root, detail=True))
    listing = {posixpath.relpath(path, root): info for path, info in found.items() if info.get("type") != "directory"}
    if "model_index.json" not in listing:
        raise ModelError(f"{label}: not a diffusers pipeline folder (no model_index.json there)")

    def read(relative: str) -> bytes:
        return storage.retrying(lambda: fs.cat_file(f"{root}/{relative}"))

    index = read("model_index.json")
    try:
        config_names, weight_names = pipeline_files(listing, json.loads(index), variant)
    except ModelError as error:
        raise ModelError(f"{label}: {error}") from error
    configs = {"model_index.json": index, **{path: read(path) for path in config_names if path != "model_index.json"}}
    weights = {path: listing[path] for path in weight_names}
    digest = hashlib.sha256()
    for path in sorted(configs):
        digest.update(f"{path}\0sha256={hashlib.sha256(configs[path]).hexdigest()}\n".encode())
    _hash_files(digest, weights)
    return ModelFiles(configs=configs, weights=weights, identity=digest.hexdigest()[:32])


def _remote_copy(source: str, options: dict[str, Any], variant: str | None) -> Path:
    """Copy what the pipeline needs once per node, weights in parallel, into a folder named by the model's identity.

    New weights under the same URL get a new folder, so a node never loads a stale copy. The copy's size and time
    are kept beside it (``COPY_RECORD``) for the run record.
    """
    fs, root = storage.filesystem(source, options)
    root = root.rstrip("/")
    files = model_files(fs, root, variant, f"model.source {source}")
    digest = hashlib.sha256(f"{source.rstrip('/')}\0{files.identity}".encode()).hexdigest()[:16]

    def fill(folder: Path) -> None:
        started = time.perf_counter()
        staged = _stage_record(fs, root)
        for relative, data in files.configs.items():
            (folder / relative).parent.mkdir(parents=True, exist_ok=True)
            (folder / relative).write_bytes(data)

        def fetch(relative: str) -> None:
            storage.retrying(lambda: fs.get_file(f"{root}/{relative}", str(folder / relative)))

        with ThreadPoolExecutor(COPY_THREADS) as pool:
            list(pool.map(fetch, files.weights))
        if staged is not None:
            check_staged(folder, [*files.configs, *files.weights], staged, source)
        record = {
            "source": source,
            "identity": files.identity,
            "files": len(files.configs) + len(files.weights),
            "bytes": files.bytes,
            "seconds": round(time.perf_counter() - started, 3),
            "verified": STAGE_RECORD if staged is not None else None,
            "copied_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (folder / COPY_RECORD).write_text(json.dumps(record))

    return _publish(cache_root() / "models" / f"remote-{digest}", fill)


def _stage_record(fs, root: str) -> dict[str, Any] | None:
    """The record ``svdbatch model stage`` wrote at ``root``, or None where the model was not staged."""
    try:
        return json.loads(storage.retrying(lambda: fs.cat_file(f"{root}/{STAGE_RECORD}")))
    except FileNotFoundError:
        return None


def check_staged(folder: Path, names: list[str], staged: dict[str, Any], source: str) -> None:
    """The node copy holds exactly what was staged: every file listed in the stage record, with its sha256."""
    for name in names:
        entry = staged["files"].get(name)
        if entry is None:
            raise ModelError(
                f"model.source {source}: {name} is not in {STAGE_RECORD} (staged with variant "
                f"{staged.get('variant')}); set model.variant to that or stage again"
            )
        if sha256_file(folder / name) != entry["sha256"]:
            raise ModelError(f"model.source {source}: {name} differs from {STAGE_RECORD} (sha256); stage it again")


def copy_record(path: str) -> dict[str, Any] | None:
    """The record of the node copy a pipeline was loaded from; None for a model that was not copied."""
    record = Path(path) / COPY_RECORD
    return json.loads(record.read_text()) if record.exists() else None


def _is_remote(source: str) -> bool:
    return "://" in source and storage.scheme(source) != "file"


def _local_folder(spec: ModelSpec) -> Path:
    """A local model folder, checked to be a diffusers pipeline."""
    local = Path(spec.source.removeprefix("file://")).expanduser()
    if not (local / "model_index.json").exists():
        raise ModelError(f"model.source {spec.source}: not a diffusers pipeline folder (no model_index.json)")
    return local


def is_hub_id(source: str) -> bool:
    """Neither the tiny model, an object-store URL nor a local path: ``org/name`` on the Hugging Face Hub."""
    return source not in TINY_MODELS and not _is_remote(source) and not (_looks_local(source) or Path(source).exists())


def hub_cache() -> str | None:
    """Where Hub downloads go: ``HF_HUB_CACHE``/``HF_HOME`` when set, else inside the node cache, so they land on the
    volume that outlives pods (not in a container's writable layer)."""
    if os.environ.get("HF_HUB_CACHE") or os.environ.get("HF_HOME"):
        return None
    return str(cache_root() / "huggingface" / "hub")


def _looks_local(source: str) -> bool:
    """A path rather than a hub id ("org/name"): absolute, relative with ./ or ../, home-relative, or file://."""
    return source.startswith(("/", "./", "../", "~", "file://"))


def resolve_source(spec: ModelSpec, options: dict[str, Any] | None = None) -> str:
    """A path or hub id diffusers can load, fetching to the node cache where needed."""
    if spec.source in TINY_MODELS:
        return str(ensure_tiny_model(spec.source))
    if _is_remote(spec.source):
        return str(_remote_copy(spec.source, options or {}, spec.variant))
    if _looks_local(spec.source) or Path(spec.source).exists():
        return str(_local_folder(spec))
    return spec.source


def model_identity(spec: ModelSpec, options: dict[str, Any] | None = None) -> str:
    """Which weights ``model.source`` (and ``model.unet``) name right now, checked on the driver before any work (a
    typo fails here): new UNet weights change it, so catalog sync renders again with them.

    Folders and object-store prefixes: ``model_files``' identity from one listing. Hub ids: the resolved commit
    (online, else the local cache's snapshot), or the bare id when neither is known. Without ``model.unet`` the
    identity is what it was before that option existed.
    """
    base = _source_identity(spec, options)
    return f"{base}+unet:{unet_identity(spec, options)}" if spec.unet else base


def _source_identity(spec: ModelSpec, options: dict[str, Any] | None) -> str:
    if spec.source in TINY_MODELS:
        return TINY_SOURCES[spec.source].TINY_VERSION
    if _is_remote(spec.source):
        fs, root = storage.filesystem(spec.source, options)
        return model_files(fs, root, spec.variant, f"model.source {spec.source}").identity
    if _looks_local(spec.source) or Path(spec.source).exists():
        fs, root = storage.filesystem(str(_local_folder(spec)))
        return model_files(fs, root, spec.variant, f"model.source {spec.source}").identity
    return _hub_identity(spec.source)


def _hub_identity(repo: str) -> str:
    from huggingface_hub import HfApi, try_to_load_from_cache

    try:
        return f"hub:{repo}@{HfApi().model_info(repo, timeout=HUB_TIMEOUT_S).sha}"
    except Exception:  # noqa: BLE001 - offline or unreachable: fall back to what this machine has cached
        cached = try_to_load_from_cache(repo, "model_index.json", cache_dir=hub_cache())
    if isinstance(cached, str) and "/snapshots/" in cached:
        return f"hub:{repo}@{cached.split('/snapshots/')[1].split('/')[0]}"
    return f"hub:{repo}"


def _hub_file(unet: str) -> tuple[str, str] | None:
    """(repo, path inside it) of a hub UNet: ``org/name`` (the repo's root), ``org/name/sub/folder`` or
    ``org/name/file.safetensors``; None for a local path or a URL."""
    if _is_remote(unet) or _looks_local(unet) or Path(unet).exists():
        return None
    parts = unet.split("/")
    if len(parts) < 2:
        raise ModelError(f"model.unet {unet}: no such file or folder, and not a hub id (org/name)")
    return "/".join(parts[:2]), "/".join(parts[2:])


def unet_files(fs, root: str, variant: str | None) -> dict[str, dict[str, Any]]:
    """The weight files of a UNet source, by name: the file itself, or a diffusers UNet folder's weights."""
    fs.invalidate_cache(root)
    try:
        info = storage.retrying(lambda: fs.info(root))
    except FileNotFoundError:
        raise ModelError(f"model.unet {root}: no such file or folder") from None
    if info.get("type") != "directory":
        return {posixpath.basename(root): info}
    found = storage.retrying(lambda: fs.find(root, maxdepth=1, detail=True))
    listing = {posixpath.basename(path): item for path, item in found.items()}
    names = pick_weights(list(listing), variant)
    if not names:
        raise ModelError(f"model.unet {root}: no .safetensors UNet weights in this folder")
    return {name: listing[name] for name in names}


def unet_identity(spec: ModelSpec, options: dict[str, Any] | None = None) -> str:
    """Which weights ``model.unet`` names right now: its files' versions, or the hub commit and path."""
    hub = _hub_file(spec.unet)
    if hub:
        return f"{_hub_identity(hub[0])}/{hub[1]}"
    fs, root = storage.filesystem(_unet_location(spec.unet), options)
    digest = hashlib.sha256()
    _hash_files(digest, unet_files(fs, root.rstrip("/"), spec.variant))
    return digest.hexdigest()[:32]


def _unet_location(unet: str) -> str:
    """An object-store URL as given, a local path made absolute."""
    return unet if _is_remote(unet) else str(Path(unet.removeprefix("file://")).expanduser())


def resolve_unet(spec: ModelSpec, options: dict[str, Any] | None = None) -> str | None:
    """A local file or folder holding ``model.unet``'s weights, copied once per node from a hub or object store."""
    if spec.unet is None:
        return None
    hub = _hub_file(spec.unet)
    if hub:
        return _hub_download(*hub)
    if not _is_remote(spec.unet):
        return _unet_location(spec.unet)
    fs, root = storage.filesystem(spec.unet, options)
    root = root.rstrip("/")
    files = unet_files(fs, root, spec.variant)
    digest = hashlib.sha256()
    _hash_files(digest, files)
    name = hashlib.sha256(f"{spec.unet.rstrip('/')}\0{digest.hexdigest()}".encode()).hexdigest()[:16]
    single = list(files) == [posixpath.basename(root)] and len(files) == 1

    def fill(folder: Path) -> None:
        for file in files:
            remote = root if single else f"{root}/{file}"
            storage.retrying(lambda remote=remote, file=file: fs.get_file(remote, str(folder / file)))
        (folder / COPY_RECORD).write_text(json.dumps({"source": spec.unet, "files": sorted(files)}))

    folder = _publish(cache_root() / "unets" / f"remote-{name}", fill, marker=COPY_RECORD)
    return str(folder / next(iter(files))) if single else str(folder)


def _hub_download(repo: str, inside: str) -> str:
    """A hub UNet in the node's hub cache: one file, or a folder's config and safetensors weights."""
    from huggingface_hub import hf_hub_download, snapshot_download

    try:
        if inside.endswith(".safetensors"):
            return hf_hub_download(repo, inside, cache_dir=hub_cache())
        prefix = f"{inside}/" if inside else ""
        patterns = [f"{prefix}*.safetensors"]
        return str(Path(snapshot_download(repo, allow_patterns=patterns, cache_dir=hub_cache())) / inside)
    except Exception as error:  # noqa: BLE001 - any hub failure is fatal and reported the same way
        raise ModelError(f"model.unet {repo}/{inside}: cannot download ({type(error).__name__}: {error})") from error


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
