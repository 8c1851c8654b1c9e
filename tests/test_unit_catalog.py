"""Catalog sync without Ray: which model files count and are copied, object versions, and the rerun decision."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import SVD_INDEX

from svdbatch import storage
from svdbatch.items.decide import RESUME_COLUMNS, resume
from svdbatch.items.expand import expand_row
from svdbatch.items.scan import build_manifest
from svdbatch.model.cache import COPY_RECORD, remote_copy
from svdbatch.model.identity import ModelError, cache_root, model_files, model_identity
from svdbatch.spec.load import build_spec

INDEX = {**SVD_INDEX, "safety_checker": [None, None]}  # a component the pipeline does not have
NEEDED_FP16 = {
    "model_index.json",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors.index.fp16.json",
    "unet/diffusion_pytorch_model.fp16-00001-of-00002.safetensors",
    "unet/diffusion_pytorch_model.fp16-00002-of-00002.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.fp16.safetensors",
    "image_encoder/config.json",
    "image_encoder/model.safetensors",  # no fp16 file: the plain weights, as diffusers falls back
    "scheduler/scheduler_config.json",
    "feature_extractor/preprocessor_config.json",
}
STRAYS = [
    "svd_xt.safetensors",  # the single-file checkpoint a hub folder also holds
    "unet/diffusion_pytorch_model.safetensors",
    "unet/diffusion_pytorch_model.bin",
    "vae/diffusion_pytorch_model.safetensors",
    "safety_checker/model.safetensors",
    "extra/diffusion_pytorch_model.safetensors",
]


@pytest.fixture
def hub_folder(tmp_path) -> Path:
    folder = tmp_path / "svd"
    (folder / "model_index.json").parent.mkdir(parents=True)
    (folder / "model_index.json").write_text(json.dumps(INDEX))
    for name in sorted(NEEDED_FP16 - {"model_index.json"}) + STRAYS:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"{}" if name.endswith(".json") else name.encode() * 100)
    return folder


def _files(folder: Path, variant: str | None):
    fs, root = storage.filesystem(str(folder))
    return model_files(fs, root, variant)


def test_model_files_are_the_components_of_model_index_in_the_requested_variant(hub_folder):
    files = _files(hub_folder, "fp16")
    assert set(files.configs) | set(files.weights) == NEEDED_FP16
    plain = _files(hub_folder, None)
    assert set(plain.weights) == {
        "unet/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
        "image_encoder/model.safetensors",
    }
    assert files.bytes == sum((hub_folder / name).stat().st_size for name in NEEDED_FP16)


def test_model_identity_follows_needed_weights_and_configs_but_not_strays(hub_folder):
    spec = build_spec({"manifest": {"path": "m"}, "output": {"url": "o"}, "model": {"source": str(hub_folder)}})
    fp16 = spec.model.model_copy(update={"variant": "fp16"})
    first = model_identity(fp16)
    assert first == model_identity(fp16) != model_identity(spec.model)
    (hub_folder / "svd_xt.safetensors").write_bytes(b"another stray checkpoint")
    (hub_folder / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"fp32 weights are not loaded")
    assert model_identity(fp16) == first
    (hub_folder / "vae" / "diffusion_pytorch_model.fp16.safetensors").write_bytes(b"new checkpoint, same name")
    second = model_identity(fp16)
    assert second != first
    (hub_folder / "vae" / "config.json").write_text('{"scaling_factor": 0.2}')
    assert model_identity(fp16) != second


def test_model_identity_of_a_folder_without_model_index_fails_before_work(tmp_path):
    spec = build_spec({"manifest": {"path": "m"}, "output": {"url": "o"}, "model": {"source": str(tmp_path)}})
    with pytest.raises(ModelError, match="no model_index.json"):
        model_identity(spec.model)
    remote = spec.model.model_copy(update={"source": f"memory://{tmp_path.name}/model"})
    with pytest.raises(ModelError, match="no model_index.json there"):
        model_identity(remote)


def test_copy_takes_only_the_needed_files_and_records_bytes_and_seconds(hub_folder):
    copy = remote_copy(str(hub_folder), {}, "fp16")
    copied = {str(path.relative_to(copy)) for path in copy.rglob("*") if path.is_file()}
    assert copied == NEEDED_FP16 | {COPY_RECORD}
    record = json.loads((copy / COPY_RECORD).read_text())
    assert record["files"] == len(NEEDED_FP16) and record["bytes"] == _files(hub_folder, "fp16").bytes
    assert record["seconds"] >= 0 and record["identity"] == _files(hub_folder, "fp16").identity
    assert remote_copy(str(hub_folder), {}, "fp16") == copy  # once per node
    (hub_folder / "vae" / "diffusion_pytorch_model.fp16.safetensors").write_bytes(b"new weights")
    fresh = remote_copy(str(hub_folder), {}, "fp16")
    assert fresh != copy and fresh.parent == cache_root() / "models"
    assert (fresh / "vae" / "diffusion_pytorch_model.fp16.safetensors").read_bytes() == b"new weights"


def test_object_version_prefers_version_id_then_etag_then_size_and_mtime():
    assert storage.object_version({"ETag": '"abc"', "VersionId": "v7", "size": 3}) == "VersionId=v7"
    assert storage.object_version({"ETag": '"abc"', "VersionId": None, "size": 3}) == "ETag=abc"
    assert storage.object_version({"size": 3, "mtime": 12.5}) == "size=3,modified=12.5"


def test_versions_are_looked_up_per_object_and_none_when_missing(tmp_path):
    image = tmp_path / "a.png"
    image.write_bytes(b"one")
    before = storage.versions([str(image), str(image), str(tmp_path / "missing.png")])
    assert before[str(tmp_path / "missing.png")] is None and len(before) == 2
    image.write_bytes(b"three")
    assert storage.versions([str(image)])[str(image)] != before[str(image)]


def _committed(item: dict, **changes) -> dict:
    return {**{name: item[name] for name in RESUME_COLUMNS}, **changes}


@pytest.mark.parametrize(
    ("changes", "retry", "expected"),
    [
        ({}, True, ("skipped", None)),
        ({"status": "error"}, True, ("ok", "failed before")),
        ({"status": "error"}, False, ("skipped", None)),
        ({"status": "removed"}, True, ("ok", None)),
        ({"fingerprint": "x"}, True, ("ok", "spec changed")),
        ({"fingerprint": "x", "source_version": "ETag=old"}, True, ("ok", "source changed")),
        ({"fingerprint": "x", "source_version": "ETag=old", "status": "error"}, False, ("ok", "source changed")),
        ({"fingerprint": "x", "source_version": None, "status": "error"}, True, ("ok", "failed before")),
        ({"fingerprint": "x", "source_version": None, "status": "error"}, False, ("skipped", None)),
        ({"fingerprint": "x", "source_version": "ETag=old", "model_identity": "old"}, True, ("ok", "model changed")),
    ],
)
def test_resume_decision_names_what_changed(changes, retry, expected):
    spec = build_spec({"manifest": {"path": "m"}, "output": {"url": "/o"}})
    identities = {"model": "m1", "sources": {"/i.png": "ETag=new"}}
    item = expand_row({"key": "k", "image": "/i.png"}, spec, "r", "/o", identities=identities)[0]
    committed = _committed(item, **changes)
    resume(item, committed, retry)
    assert (item["status"], item["rerender_reason"]) == expected
    fresh = dict(item, status="ok", rerender_reason=None)
    resume(fresh, None, retry)
    assert (fresh["status"], fresh["rerender_reason"]) == ("ok", None)


def test_manifest_version_column_wins_over_a_lookup_and_both_shape_the_fingerprint():
    spec = build_spec({"manifest": {"path": "m"}, "output": {"url": "/o"}})
    identities = {"model": "m1", "sources": {"/i.png": "ETag=looked-up"}}

    def item(row: dict, found: dict = identities) -> dict:
        return expand_row({"key": "k", "image": "/i.png", **row}, spec, "r", "/o", identities=found)[0]

    assert item({"image_version": "v2"})["source_version"] == "v2"
    assert item({"image_version": None})["source_version"] == "ETag=looked-up"
    assert item({})["fingerprint"] != item({"image_version": "v2"})["fingerprint"]
    assert item({})["fingerprint"] != item({}, {**identities, "model": "m2"})["fingerprint"]
    assert item({})["model_identity"] == "m1"


def test_manifest_command_writes_each_image_version_from_its_listing(tmp_path):
    (tmp_path / "images" / "sub").mkdir(parents=True)
    (tmp_path / "images" / "a.png").write_bytes(b"a")
    (tmp_path / "images" / "sub" / "b.jpg").write_bytes(b"bb")
    assert build_manifest(str(tmp_path / "images"), str(tmp_path / "m.parquet")) == 2
    rows = {row["key"]: row for row in pq.read_table(tmp_path / "m.parquet").to_pylist()}
    mtime = os.stat(tmp_path / "images" / "sub" / "b.jpg").st_mtime
    assert rows["sub/b.jpg"]["image_version"] == f"size=2,modified={mtime}"
    assert rows["a.png"]["image_version"].startswith("size=1,")


def test_batch_expansion_carries_identities_bit_identical_to_the_per_row_formula():
    from svdbatch.items.expand import expand_batch
    from svdbatch.items.metadata import to_table

    spec = build_spec({"manifest": {"path": "m"}, "output": {"url": "/o"}, "seeds": {"variants": 2}})
    identities = {"model": 'weights "v2"', "sources": {"/i/a.png": 'ETag="x"', "/i/b.png": None}}
    table = pa.table(
        {
            "key": ["a", "b", "c", None],
            "image": ["/i/a.png", "/i/b.png", "/i/c.png", "/i/n.png"],
            "image_version": [None, None, "v7", "v8"],
        }
    )
    fast = expand_batch(table, spec, "r", "/o", None, identities).to_pylist()
    rows = [item for row in table.to_pylist() for item in expand_row(row, spec, "r", "/o", None, identities)]
    assert fast == to_table(rows).to_pylist()
    versions = {(row["key"], row["variant"]): row["source_version"] for row in fast}
    assert versions == {("a", 0): 'ETag="x"', ("a", 1): 'ETag="x"', ("b", 0): None, ("b", 1): None,
                        ("c", 0): "v7", ("c", 1): "v7", (None, 0): "v8"}
    assert {row["model_identity"] for row in fast} == {'weights "v2"'}
