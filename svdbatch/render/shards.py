"""WebDataset tar shards of the ok videos, with the same exactly-once rule as the MP4s.

Each sample is ``{sample key}.mp4``, ``.json`` (its metadata row) and ``.jpg`` (the fitted input image), in
``{output}/shards/{run_id}-{hash of its sample keys}.tar``; ``{output}/shards/index.json`` lists every shard's
samples. A shard stage writes each tar whole (one atomic write) *before* its rows reach the driver's commit record,
and every row names its shard. So after a kill a shard is either referenced by committed rows or an orphan, and
``reconcile`` (run by every publish, at the start and end of a run) deletes orphans and rewrites shards holding
a sample that a later render superseded: every (key, variant) is then in exactly one shard, the one its latest row
names.

Ray's ``write_webdataset`` was evaluated first: it is a terminal sink (its rows cannot then reach the commit record
in the same pass), streams straight to the final file name (a killed write leaves a partial tar visible on local
disks), and names files per write call, so a rerun of uncommitted or re-rendered items duplicates samples.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections import defaultdict
from typing import Any

import numpy as np
import pyarrow as pa
from PIL import Image

from svdbatch import storage
from svdbatch.items.keys import safe_key
from svdbatch.items.metadata import METADATA_SCHEMA, OK, to_rows, to_table
from svdbatch.spec.config import JobSpec

SHARDS = "shards"
INDEX = "index.json"
JPEG_QUALITY = 95


def sample_key(key: str, variant: int) -> str:
    """The WebDataset key of an item: no dots (WebDataset splits a name at its first dot) and no slashes."""
    return f"{safe_key(key).replace('.', '_')}_v{variant:04d}"


def _json_row(row: dict[str, Any]) -> bytes:
    values = {name: row[name] for name in METADATA_SCHEMA.names}
    values["finished_at"] = row["finished_at"].isoformat() if row["finished_at"] else None
    return json.dumps(values, sort_keys=True).encode()


def _jpeg(row: dict[str, Any]) -> bytes:
    pixels = np.frombuffer(row["image"], np.uint8).reshape(row["height"], row["width"], 3)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def _tar(members: list[tuple[str, bytes]], mtime: float) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), int(mtime), 0o644
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _groups(rows: list[dict[str, Any]], samples: int, max_bytes: int) -> list[list[dict[str, Any]]]:
    """Consecutive runs of at most ``samples`` rows, closed before the MP4 bytes pass ``max_bytes``."""
    groups: list[list[dict[str, Any]]] = []
    size = 0
    for row in rows:
        if not groups or len(groups[-1]) >= samples or (groups[-1] and size + len(row["video"]) > max_bytes):
            groups.append([])
            size = 0
        groups[-1].append(row)
        size += len(row["video"])
    return groups


class WriteShards:
    """Write the ok rows of a block as shards, stamp each row with its shard, and emit metadata rows."""

    def __init__(self, job: JobSpec):
        self.job = job

    def __call__(self, batch: pa.Table) -> pa.Table:
        return _write_shards(batch, self.job)


def _write_shards(batch: pa.Table, job: JobSpec) -> pa.Table:
    rows = to_rows(batch)
    ok = [row for row in rows if row["status"] == OK]
    for group in _groups(ok, job.output.shards.samples_per_shard, job.output.shards.max_shard_bytes):
        keys = [sample_key(row["key"], row["variant"]) for row in group]
        name = f"{group[0]['run_id']}-{hashlib.sha256(chr(0).join(keys).encode()).hexdigest()[:16]}.tar"
        members = []
        for key, row in zip(keys, group, strict=True):
            row["shard"] = name
            members += [(f"{key}.mp4", row["video"]), (f"{key}.json", _json_row(row)), (f"{key}.jpg", _jpeg(row))]
        newest = max(row["finished_at"] for row in group).timestamp()
        storage.write_bytes(storage.join(job.output.url, SHARDS, name), _tar(members, newest), job.storage_options)
    return to_table(rows, METADATA_SCHEMA)


def _without_stale(data: bytes, keep: set[str]) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        infos = [info for info in archive.getmembers() if info.name.split(".", 1)[0] in keep]
        members = [(info.name, archive.extractfile(info).read()) for info in infos]
    return _tar(members, max(info.mtime for info in infos))


def reconcile(output: str, pending: pa.Table, latest: list[dict[str, Any]], options: dict[str, Any]) -> dict:
    """Make the shard folder hold each latest ok sample exactly once, then publish the index; returns the index.

    ``pending`` is every row committed since the last publish (superseded ones included, so what each new shard
    holds is known) and ``latest`` the latest of them per item: the cost follows the run, not the table. Each such
    item leaves the shard the index had it in and joins the shard its latest row names, if it is ok. A shard the
    new index does not name is deleted (a killed run's orphan, or emptied); one that still holds a superseded
    sample is rewritten without it. Shards are fixed before the index is written, and applying the same pending
    rows twice gives the same result, so a kill anywhere in between is repaired by the next publish.
    """
    fs, folder = storage.filesystem(storage.join(output, SHARDS), options)
    index_url = storage.join(output, SHARDS, INDEX)
    live: dict[str, set[str]] = defaultdict(set)
    if storage.exists(index_url, options):
        for name, keys in json.loads(storage.read_bytes(index_url, options))["shards"].items():
            live[name].update(keys)
    written = {name: set(keys) for name, keys in live.items()}
    for row in pending.select(["shard", "key", "variant"]).to_pylist():
        if row["shard"]:
            written.setdefault(row["shard"], set()).add(sample_key(row["key"], row["variant"]))
    home = {key: name for name, keys in live.items() for key in keys}
    for row in latest:
        key = sample_key(row["key"], row["variant"]) if row["key"] else None
        if key in home:
            live[home[key]].discard(key)
        if row["status"] == OK and row["shard"]:
            live[row["shard"]].add(key)
    live = {name: keys for name, keys in live.items() if keys}
    present = [path for path in fs.find(folder) if not path.endswith("/" + INDEX)] if fs.exists(folder) else []
    for path in present:
        name = path.rsplit("/", 1)[-1]
        if name not in live:
            fs.rm(path)
        elif written.get(name, set()) - live[name]:
            url = storage.join(output, SHARDS, name)
            storage.write_bytes(url, _without_stale(storage.read_bytes(url, options), live[name]), options)
    index = {
        "samples": sum(len(keys) for keys in live.values()),
        "shards": {name: sorted(keys) for name, keys in sorted(live.items())},
    }
    storage.write_bytes(index_url, json.dumps(index, indent=1).encode(), options)
    return index
