"""Which weights a model spec names, without torch: the files a diffusers pipeline folder loads (one listing,
the variant's safetensors and the configs), their identity, hub ids and ``model.unet`` sources.

The driver checks ``model_identity`` and ``model_family`` before any work and the resume decision compares the
identity, so this module imports neither torch nor diffusers (``import svdbatch.ray.driver`` stays light; the family
modules import torch only inside their functions)."""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from svdbatch import storage
from svdbatch.errors import UserError
from svdbatch.model.families import FAMILIES, TINY_SOURCES
from svdbatch.model.internals import PIPELINE_CLASS_KEY, pipeline_class_name
from svdbatch.spec.config import TINY_MODELS, ModelSpec

CONFIG_SUFFIXES = (".json", ".txt")
HUB_TIMEOUT_S = 10


class ModelError(UserError, RuntimeError):
    """The model cannot be loaded: fatal for the job."""


def cache_root() -> Path:
    return Path(os.environ.get("SVDBATCH_CACHE", Path.home() / ".cache" / "svdbatch"))


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


def hash_files(digest, files: dict[str, dict[str, Any]]) -> None:
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
    hash_files(digest, weights)
    return ModelFiles(configs=configs, weights=weights, identity=digest.hexdigest()[:32])


def is_remote(source: str) -> bool:
    return "://" in source and storage.scheme(source) != "file"


def local_folder(spec: ModelSpec) -> Path:
    """A local model folder, checked to be a diffusers pipeline."""
    local = Path(spec.source.removeprefix("file://")).expanduser()
    if not (local / "model_index.json").exists():
        raise ModelError(f"model.source {spec.source}: not a diffusers pipeline folder (no model_index.json)")
    return local


def is_hub_id(source: str) -> bool:
    """Neither the tiny model, an object-store URL nor a local path: ``org/name`` on the Hugging Face Hub."""
    return source not in TINY_MODELS and not is_remote(source) and not (looks_local(source) or Path(source).exists())


def hub_cache() -> str | None:
    """Where Hub downloads go: ``HF_HUB_CACHE``/``HF_HOME`` when set, else inside the node cache, so they land on the
    volume that outlives pods (not in a container's writable layer)."""
    if os.environ.get("HF_HUB_CACHE") or os.environ.get("HF_HOME"):
        return None
    return str(cache_root() / "huggingface" / "hub")


def looks_local(source: str) -> bool:
    """A path rather than a hub id ("org/name"): absolute, relative with ./ or ../, home-relative, or file://."""
    return source.startswith(("/", "./", "../", "~", "file://"))


def model_identity(spec: ModelSpec, options: dict[str, Any] | None = None) -> str:
    """Which weights ``model.source`` (and ``model.unet``) name right now, checked on the driver before any work (a
    typo fails here): new UNet weights change it, so catalog sync renders again with them.

    Folders and object-store prefixes: ``model_files``' identity from one listing. Hub ids: the resolved commit
    (online, else the local cache's snapshot), or the bare id when neither is known. Without ``model.unet`` it is
    the source's alone (svdbatch/formats.py: options shape it only when set).
    """
    base = _source_identity(spec, options)
    return f"{base}+unet:{unet_identity(spec, options)}" if spec.unet else base


def _source_identity(spec: ModelSpec, options: dict[str, Any] | None) -> str:
    if spec.source in TINY_MODELS:
        return TINY_SOURCES[spec.source].TINY_VERSION
    if is_remote(spec.source):
        fs, root = storage.filesystem(spec.source, options)
        return model_files(fs, root, spec.variant, f"model.source {spec.source}").identity
    if looks_local(spec.source) or Path(spec.source).exists():
        fs, root = storage.filesystem(str(local_folder(spec)))
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


def hub_file(unet: str) -> tuple[str, str] | None:
    """(repo, path inside it) of a hub UNet: ``org/name`` (the repo's root), ``org/name/sub/folder`` or
    ``org/name/file.safetensors``; None for a local path or a URL."""
    if is_remote(unet) or looks_local(unet) or Path(unet).exists():
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
    hub = hub_file(spec.unet)
    if hub:
        return f"{_hub_identity(hub[0])}/{hub[1]}"
    fs, root = storage.filesystem(unet_location(spec.unet), options)
    digest = hashlib.sha256()
    hash_files(digest, unet_files(fs, root.rstrip("/"), spec.variant))
    return digest.hexdigest()[:32]


def unet_location(unet: str) -> str:
    """An object-store URL as given, a local path made absolute."""
    return unet if is_remote(unet) else str(Path(unet.removeprefix("file://")).expanduser())


def model_family(spec: ModelSpec, options: dict[str, Any] | None = None) -> str:
    """The family (``svd``, ``wan``, ``ltx``) that drives ``model.source``: ``model.family`` when named, else from
    the pipeline class its model_index.json names. A hub id whose index can be read neither online nor from the
    cache is taken as SVD; the generation actor fails its rows in one line if the model is another family."""
    if spec.family != "auto":
        return spec.family
    index = model_config(spec, options)
    if index is None:
        return "svd"
    pipeline = pipeline_class_name(index)
    if pipeline not in FAMILIES:
        supported = ", ".join(FAMILIES)
        raise ModelError(f"model.source {spec.source}: {pipeline} is not supported (svdbatch renders {supported})")
    return FAMILIES[pipeline].NAME


def model_config(
    spec: ModelSpec, options: dict[str, Any] | None = None, name: str = "model_index.json"
) -> dict[str, Any] | None:
    """A JSON file of model.source (``model_index.json``, ``transformer/config.json``, ...), read without loading the
    model; None for a hub id that can be read neither online nor from the cache, and for an embedded tiny model's
    other files (they exist only once a process built it)."""
    if spec.source in TINY_MODELS:
        return {PIPELINE_CLASS_KEY: TINY_SOURCES[spec.source].PIPELINE} if name == "model_index.json" else None
    if is_remote(spec.source) or looks_local(spec.source) or Path(spec.source).exists():
        url = spec.source if is_remote(spec.source) else str(local_folder(spec))
        fs, root = storage.filesystem(url, options)
        return json.loads(storage.retrying(lambda: fs.cat_file(f"{root.rstrip('/')}/{name}")))
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    path = try_to_load_from_cache(spec.source, name, cache_dir=hub_cache())
    if not isinstance(path, str):
        try:
            path = hf_hub_download(spec.source, name, cache_dir=hub_cache(), etag_timeout=HUB_TIMEOUT_S)
        except Exception:  # noqa: BLE001 - offline or unreachable: the file cannot be read
            return None
    return json.loads(Path(path).read_text())
