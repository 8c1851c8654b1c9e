"""Catalog sync end to end on moto's S3 server: images and weights replaced in place, prune.

Only the lookup of an object's version differs between stores (ETag or version id on S3, size and mtime on local
disk), and that is unit-tested for both (test_unit_catalog); the decisions are the same code, so the whole story runs
once, on the store with the more moving parts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import make_spec, perturbed_weights, save_variant_model, write_images, write_manifest
from s3_server import moto_s3

from svdbatch import storage
from svdbatch.cli.plan import make_plan
from svdbatch.model.cache import COPY_RECORD
from svdbatch.model.identity import cache_root
from svdbatch.ray import driver
from svdbatch.store import commit

BUCKET = "svdbatch-catalog"
UNET_FP16 = "unet/diffusion_pytorch_model.fp16.safetensors"


@pytest.fixture(scope="module")
def s3_options():
    with moto_s3(BUCKET) as (port, _):
        endpoint = f"http://127.0.0.1:{port}"
        client = {"endpoint_url": endpoint, "region_name": "us-east-1"}
        yield {"key": "testing", "secret": "testing", "client_kwargs": client}


@pytest.fixture
def store(s3_options, tmp_path):
    """(base URL, storage_options) of an empty place holding the images, the model and the output."""
    return f"s3://{BUCKET}/{tmp_path.name}", s3_options


def _put(url: str, data: bytes, options: dict) -> None:
    storage.write_bytes(url, data, options)


def _table(output: str, options: dict) -> dict[str, dict]:
    rows = commit.read_rows(output, options).to_pylist()
    assert len(rows) == len({row["key"] for row in rows})  # one row per item once a run has published
    return {row["key"]: row for row in rows}


def _counts(spec) -> dict:
    report = make_plan(spec)
    return {**{name: count for name, count in report.counts.items() if count}, "to_remove": report.to_remove}


def test_replaced_image_and_weights_rerender_what_they_shape_and_prune_removes(ray_cluster, store, tmp_path):
    base, options = store
    local_images = write_images(tmp_path / "images", 4)
    images = {key: storage.join(base, "images", f"{key}.png") for key in "abc"}
    for url, path in zip(images.values(), local_images, strict=False):
        _put(url, Path(path).read_bytes(), options)
    model = storage.join(base, "model")
    for path in save_variant_model(tmp_path / "model").rglob("*"):
        if path.is_file():
            _put(storage.join(model, str(path.relative_to(tmp_path / "model"))), path.read_bytes(), options)
    output = storage.join(base, "out")
    manifest = write_manifest(tmp_path / "m.parquet", {"key": list(images), "image": list(images.values())})

    def spec(prune: bool = False):
        job = make_spec(
            manifest,
            output,
            options,
            model={"source": model, "variant": "fp16"},
            images={"allowed_schemes": ["file", "s3"]},
        )
        return job.model_copy(update={"output": job.output.model_copy(update={"prune": prune})})

    assert _counts(spec()) == {"new": 3, "to_remove": 0}
    first = driver.run(spec(), progress=False)
    assert (first.rendered, first.failed) == (3, 0)
    before = _table(output, options)

    _put(images["b"], Path(local_images[3]).read_bytes(), options)  # a new product photo at the same URL
    assert _counts(spec()) == {"source_changed": 1, "done": 2, "to_remove": 0}
    source = driver.run(spec(), progress=False)
    assert (source.rendered, source.skipped, source.rerendered) == (1, 2, 1)
    after = _table(output, options)
    assert after["b"]["rerender_reason"] == "source changed"
    assert after["b"]["source_sha256"] != before["b"]["source_sha256"]
    assert after["b"]["sha256"] != before["b"]["sha256"]
    assert {key: after[key]["run_id"] for key in "ac"} == {key: before[key]["run_id"] for key in "ac"}

    unet = storage.join(model, UNET_FP16)
    _put(unet, perturbed_weights(storage.read_bytes(unet, options)), options)  # a new checkpoint, same name
    assert _counts(spec()) == {"model_changed": 3, "to_remove": 0}
    weights = driver.run(spec(), progress=False)
    assert (weights.rendered, weights.skipped, weights.rerendered) == (3, 0, 3)
    after = _table(output, options)
    assert {row["rerender_reason"] for row in after.values()} == {"model changed"}
    assert len({row["model_identity"] for row in after.values()} | {before["a"]["model_identity"]}) == 2

    write_manifest(manifest, {"key": ["a", "b"], "image": [images["a"], images["b"]]})
    assert _counts(spec()) == {"done": 2, "to_remove": 1}
    assert driver.run(spec(), progress=False).removed == 0  # pruning is opt-in
    assert storage.exists(after["c"]["video_uri"], options)
    pruned = driver.run(spec(prune=True), progress=False)
    assert (pruned.rendered, pruned.skipped, pruned.removed) == (0, 2, 1)
    assert "1 removed" in pruned.line()
    final = _table(output, options)
    assert final["c"]["status"] == "removed" and final["c"]["video_uri"] is None
    assert not storage.exists(after["c"]["video_uri"], options)
    assert {final[key]["status"] for key in "ab"} == {"ok"}
    assert _counts(spec(prune=True)) == {"done": 2, "to_remove": 0}

    record = json.loads(storage.read_bytes(storage.join(output, "_job", "runs", f"{weights.run_id}.json"), options))
    copies = record["model_copies"]
    assert len(copies) == 1 and copies[0]["files"] == 9 and copies[0]["bytes"] > 0 and copies[0]["seconds"] >= 0
    records = (cache_root() / "models").glob(f"remote-*/{COPY_RECORD}")
    copied = next(path for path in records if json.loads(path.read_text())["identity"] == copies[0]["identity"])
    names = {str(path.relative_to(copied.parent)) for path in copied.parent.rglob("*.safetensors")}
    fp16 = {UNET_FP16, "vae/diffusion_pytorch_model.fp16.safetensors", "image_encoder/model.fp16.safetensors"}
    assert names == fp16  # not the fp32 files nor the single-file checkpoint beside them
