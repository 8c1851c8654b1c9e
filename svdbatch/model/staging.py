"""``svdbatch model stage SOURCE URL``: copy the files a pipeline loads to object storage once, resumable and verified.

GPU nodes then load ``model.source: URL`` (copied once per node into the node cache) and never talk to the Hub.
Exactly the files ``model.pipeline_files`` picks are copied: the chosen variant's safetensors, no duplicate
``.bin``/``.ckpt`` or single-file checkpoint, every component's configs. Each file is hashed (sha256) at the source,
checked against the Hub's own hash where it has one, and read back from the destination after upload. The record
``svdbatch-stage.json`` (files, sizes, hashes) is written last, so its presence says the copy is complete; a rerun
skips every file whose object is unchanged since it was verified (``.svdbatch-stage-progress.json`` keeps that across
a killed run).
"""

from __future__ import annotations

import contextlib
import json
import posixpath
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fsspec.implementations.local import LocalFileSystem

from svdbatch import storage
from svdbatch.errors import UserError
from svdbatch.model.cache import STAGE_RECORD, sha256_file, sha256_stream
from svdbatch.model.identity import HUB_TIMEOUT_S, is_hub_id, pipeline_files
from svdbatch.model.loading import ensure_tiny_model
from svdbatch.spec.config import TINY_MODELS

PROGRESS = ".svdbatch-stage-progress.json"
STAGE_THREADS = 4


class StageError(UserError, RuntimeError):
    """Staging cannot go on: one line saying what to fix."""


@dataclass
class Source:
    """Where the files come from: each file's size, its sha256 where the source states one without a download (the
    Hub's LFS files), and ``opened(name)``, a context giving a local path to the file."""

    label: str
    revision: str | None
    sizes: dict[str, int]
    opened: Callable[[str], contextlib.AbstractContextManager[Path]]
    hashes: dict[str, str] = field(default_factory=dict)


def fsspec_source(url: str, options: dict[str, Any] | None) -> Source:
    """A local folder (read in place) or an object-store prefix (each file downloaded to a temporary file)."""
    fs, root = storage.filesystem(url, options)
    root = root.rstrip("/")
    try:
        found = storage.retrying(lambda: fs.find(root, detail=True))
    except Exception as error:  # noqa: BLE001 - the first call to the store: any failure means it is unusable
        problem = f"{type(error).__name__}: {error}"
        raise StageError(f"{url}: cannot be listed ({problem}); check it and the credentials") from error
    sizes = {posixpath.relpath(path, root): info["size"] for path, info in found.items() if info["type"] == "file"}

    @contextlib.contextmanager
    def opened(name: str) -> Iterator[Path]:
        if isinstance(fs, LocalFileSystem):
            yield Path(root) / name
            return
        with tempfile.TemporaryDirectory(prefix="svdbatch-stage-") as folder:
            local = Path(folder) / posixpath.basename(name)
            storage.retrying(lambda: fs.get_file(f"{root}/{name}", str(local)))
            yield local

    return Source(url, None, sizes, opened)


def hub_source(repo: str) -> Source:
    """A Hub repository at its current commit: one listing with sizes and LFS hashes, files via ``hf_hub_download``
    (``HF_TOKEN`` from the environment for gated repositories)."""
    from huggingface_hub import HfApi, hf_hub_download

    try:
        info = HfApi().model_info(repo, files_metadata=True, timeout=HUB_TIMEOUT_S)
    except Exception as error:  # noqa: BLE001 - any hub failure means the same to the user
        raise StageError(f"{repo}: cannot list the Hub repository ({type(error).__name__}: {error})") from error
    siblings = info.siblings or []

    @contextlib.contextmanager
    def opened(name: str) -> Iterator[Path]:
        try:
            path = hf_hub_download(repo, name, revision=info.sha)
        except Exception as error:  # noqa: BLE001 - any hub failure means the same to the user
            raise StageError(f"{repo}/{name}: cannot download ({type(error).__name__}: {error})") from error
        yield Path(path)

    return Source(
        f"hub:{repo}",
        info.sha,
        {sibling.rfilename: sibling.size for sibling in siblings},
        opened,
        {sibling.rfilename: sibling.lfs.sha256 for sibling in siblings if sibling.lfs},
    )


def open_source(source: str, options: dict[str, Any] | None = None) -> Source:
    if source in TINY_MODELS:
        return fsspec_source(str(ensure_tiny_model(source)), None)
    if is_hub_id(source):
        return hub_source(source)
    if "://" in source and not source.startswith("file://"):
        return fsspec_source(source, options)
    return fsspec_source(str(Path(source.removeprefix("file://")).expanduser()), None)


def unchanged(entry: dict[str, Any] | None, info: dict[str, Any] | None, size: int, sha256: str) -> bool:
    """Whether the destination object is the one verified earlier (same version) and holds this content."""
    return bool(
        entry
        and info
        and entry["sha256"] == sha256
        and entry["size"] == size == info["size"]
        and entry["version"] == storage.object_version(info)
    )


@dataclass
class StageResult:
    url: str
    record: dict[str, Any]
    copied: list[str]
    skipped: list[str]


class _Destination:
    """The staged copy: its objects, what earlier runs verified, and the progress file kept while it grows."""

    def __init__(self, url: str, options: dict[str, Any] | None):
        self.url, self.options = url.rstrip("/"), options
        self.fs, root = storage.filesystem(url, options)
        self.root = root.rstrip("/")
        self.lock = threading.Lock()
        try:
            self.record = self._read(STAGE_RECORD)
        except Exception as error:  # noqa: BLE001 - the first call to the store: any failure means it is unusable
            problem = f"{type(error).__name__}: {error}"
            raise StageError(f"{url}: cannot be read ({problem}); check it and the credentials") from error
        self.verified = {**(self.record or {}).get("files", {}), **(self._read(PROGRESS) or {}).get("files", {})}

    def _path(self, name: str) -> str:
        return f"{self.root}/{name}"

    def _read(self, name: str) -> dict[str, Any] | None:
        try:
            return json.loads(storage.retrying(lambda: self.fs.cat_file(self._path(name))))
        except FileNotFoundError:
            return None

    def write(self, name: str, payload: dict[str, Any]) -> None:
        data = json.dumps(payload, indent=1, sort_keys=True).encode()
        storage.write_bytes(storage.join(self.url, name), data, self.options)

    def info(self, name: str) -> dict[str, Any] | None:
        self.fs.invalidate_cache(self._path(name))
        try:
            return storage.retrying(lambda: self.fs.info(self._path(name)))
        except FileNotFoundError:
            return None

    def put(self, local: Path, name: str, size: int, sha256: str) -> dict[str, Any]:
        """Upload, then check the object's size and read it back to compare its sha256."""
        path = self._path(name)
        if isinstance(self.fs, LocalFileSystem):
            self.fs.makedirs(posixpath.dirname(path), exist_ok=True)
        storage.retrying(lambda: self.fs.put_file(str(local), path))
        info = self.info(name) or {}
        if info.get("size") != size:
            raise StageError(f"{self.url}/{name}: {info.get('size')} bytes after upload, {size} expected")
        with self.fs.open(path, "rb") as handle:
            if sha256_stream(handle) != sha256:
                raise StageError(f"{self.url}/{name}: the uploaded object's sha256 differs from the source's")
        return {"size": size, "sha256": sha256, "version": storage.object_version(info)}

    def verified_now(self, name: str, entry: dict[str, Any]) -> None:
        with self.lock:
            self.verified[name] = entry
            self.write(PROGRESS, {"files": self.verified})


def stage(
    source: str,
    url: str,
    variant: str | None = None,
    options: dict[str, Any] | None = None,
    say: Callable[[str], None] = lambda line: None,
) -> StageResult:
    """Copy what the pipeline at ``source`` loads (hub id, local folder, URL or the tiny model) to ``url``."""
    origin = open_source(source, options)
    if "model_index.json" not in origin.sizes:
        raise StageError(f"{source}: not a diffusers pipeline (no model_index.json)")
    with origin.opened("model_index.json") as path:
        index = json.loads(path.read_bytes())
    configs, weights = pipeline_files(origin.sizes, index, variant)
    destination = _Destination(url, options)

    def one(name: str) -> tuple[dict[str, Any], bool]:
        entry, size = destination.verified.get(name), origin.sizes[name]
        known = origin.hashes.get(name)
        if known and unchanged(entry, destination.info(name), size, known):
            return entry, False
        with origin.opened(name) as local:
            sha256 = sha256_file(local)
            if known and sha256 != known:
                raise StageError(f"{origin.label}/{name}: downloaded file's sha256 differs from the source's listing")
            if unchanged(entry, destination.info(name), size, sha256):
                return entry, False
            entry = destination.put(local, name, size, sha256)
        destination.verified_now(name, entry)
        say(f"  copied {name} ({size / 1e6:,.1f} MB)")
        return entry, True

    with ThreadPoolExecutor(STAGE_THREADS) as pool:
        done = dict(zip(configs + weights, pool.map(one, configs + weights), strict=True))
    files = {name: entry for name, (entry, _) in done.items()}
    record = {
        "source": origin.label,
        "revision": origin.revision,
        "variant": variant,
        "files": files,
        "bytes": sum(entry["size"] for entry in files.values()),
    }
    previous = {name: value for name, value in (destination.record or {}).items() if name != "staged_at"}
    if previous != record:
        destination.write(STAGE_RECORD, {**record, "staged_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    if destination.info(PROGRESS):
        storage.delete(storage.join(destination.url, PROGRESS), options)
    copied = [name for name, (_, fresh) in done.items() if fresh]
    return StageResult(destination.url, record, copied, [name for name in done if name not in copied])
