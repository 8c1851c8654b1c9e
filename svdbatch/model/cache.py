"""The node cache: a model or UNet copied once per node from object storage or the hub, published whole under a
file lock that every process on the node shares, checked against ``svdbatch model stage``'s record. No torch."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import posixpath
import shutil
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from svdbatch import storage
from svdbatch.model.identity import (
    ModelError,
    cache_root,
    hash_files,
    hub_cache,
    hub_file,
    is_remote,
    model_files,
    unet_files,
    unet_location,
)
from svdbatch.spec.config import ModelSpec

COPY_THREADS = 8
COPY_RECORD = "svdbatch-copy.json"
STAGE_RECORD = "svdbatch-stage.json"  # written last by `svdbatch model stage`: files, sizes, sha256
HASH_CHUNK = 8 << 20


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


def publish_folder(target: Path, fill, marker: str = "model_index.json") -> Path:
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


def sha256_stream(handle) -> str:
    digest = hashlib.sha256()
    while chunk := handle.read(HASH_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    with open(path, "rb") as handle:
        return sha256_stream(handle)


def remote_copy(source: str, options: dict[str, Any], variant: str | None) -> Path:
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

    return publish_folder(cache_root() / "models" / f"remote-{digest}", fill)


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


def resolve_unet(spec: ModelSpec, options: dict[str, Any] | None = None) -> str | None:
    """A local file or folder holding ``model.unet``'s weights, copied once per node from a hub or object store."""
    if spec.unet is None:
        return None
    hub = hub_file(spec.unet)
    if hub:
        return _hub_download(*hub)
    if not is_remote(spec.unet):
        return unet_location(spec.unet)
    fs, root = storage.filesystem(spec.unet, options)
    root = root.rstrip("/")
    files = unet_files(fs, root, spec.variant)
    digest = hashlib.sha256()
    hash_files(digest, files)
    name = hashlib.sha256(f"{spec.unet.rstrip('/')}\0{digest.hexdigest()}".encode()).hexdigest()[:16]
    single = list(files) == [posixpath.basename(root)] and len(files) == 1

    def fill(folder: Path) -> None:
        for file in files:
            remote = root if single else f"{root}/{file}"
            storage.retrying(lambda remote=remote, file=file: fs.get_file(remote, str(folder / file)))
        (folder / COPY_RECORD).write_text(json.dumps({"source": spec.unet, "files": sorted(files)}))

    folder = publish_folder(cache_root() / "unets" / f"remote-{name}", fill, marker=COPY_RECORD)
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
