"""The whole job on a real local Ray cluster with the tiny model: videos and metadata, checked by decoding."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from helpers import make_spec, write_images, write_manifest

from svdbatch import pipeline
from svdbatch.cli import main
from svdbatch.images import load_image
from svdbatch.items import derive_seed
from svdbatch.model import ensure_tiny_model
from svdbatch.video import decode, probe


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inputs")
    images = write_images(folder / "images", 5)
    manifest = write_manifest(folder / "manifest.parquet", {"key": [f"k{i}" for i in range(5)], "image": images})
    return folder, manifest


def _table(output: Path) -> list[dict]:
    return sorted(pq.read_table(output / "metadata").to_pylist(), key=lambda row: (row["key"], row["variant"]))


def test_job_end_to_end_writes_decodable_videos_and_matching_metadata(ray_cluster, inputs, tmp_path):
    _, manifest = inputs
    spec = make_spec(manifest, tmp_path / "out", seeds={"variants": 2})
    summary = pipeline.run(spec, progress=False)
    assert (summary.rendered, summary.failed) == (10, 0)
    rows = _table(tmp_path / "out")
    assert len(rows) == 10 and {row["status"] for row in rows} == {"ok"}
    for row in rows:
        assert row["seed"] == derive_seed(7, row["key"], row["variant"])
        data = Path(row["video_uri"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == row["sha256"] and len(data) == row["bytes"]
        info = probe(row["video_uri"])
        assert (info.codec, info.pixel_format, info.width, info.height) == ("h264", "yuv420p", 64, 64)
        assert (info.frames, info.fps) == (8, 6)
    assert (tmp_path / "out" / "_job" / "summary.json").exists()


def test_missing_image_is_one_error_row_and_the_rest_complete(ray_cluster, inputs, tmp_path):
    folder, _ = inputs
    images = sorted(str(path) for path in (folder / "images").glob("*.png"))
    manifest = write_manifest(
        tmp_path / "m.parquet", {"key": ["a", "gone", "b"], "image": [images[0], str(tmp_path / "nope.png"), images[1]]}
    )
    summary = pipeline.run(make_spec(manifest, tmp_path / "out"), progress=False)
    assert (summary.rendered, summary.failed) == (2, 1)
    bad = [row for row in _table(tmp_path / "out") if row["status"] == "error"]
    assert len(bad) == 1 and bad[0]["key"] == "gone"
    assert "nope.png" in bad[0]["error"] and "not found" in bad[0]["error"]
    assert bad[0]["video_uri"] is None


def _frames_by_item(output: Path) -> dict:
    return {(row["key"], row["variant"]): (row["seed"], decode(row["video_uri"])) for row in _table(output)}


def test_batch_size_and_actor_count_do_not_change_seeds_or_frames(ray_cluster, inputs, tmp_path):
    folder, _ = inputs
    images = sorted(str(path) for path in (folder / "images").glob("*.png"))[:3]
    manifest = write_manifest(tmp_path / "m.parquet", {"key": ["k0", "k1", "k2"], "image": images})
    runs = {}
    # 6 items: batch 4 gives one full batch and one short one; two actors split the items between them.
    for name, compute in {"b1a1": {"batch_size": 1}, "b4a1": {"batch_size": 4}, "b1a2": {"actors": 2}}.items():
        spec = make_spec(manifest, tmp_path / name, seeds={"variants": 2}, video={"lossless": True}, compute=compute)
        assert pipeline.run(spec, progress=False).rendered == 6
        runs[name] = _frames_by_item(tmp_path / name)
    reference = runs["b1a1"]
    for name, frames in runs.items():
        assert frames.keys() == reference.keys()
        for item, (seed, video) in frames.items():
            assert seed == reference[item][0], name
            assert np.abs(video.astype(int) - reference[item][1].astype(int)).max() <= 1, (name, item)


def test_metadata_row_regenerates_its_video_with_plain_diffusers(ray_cluster, inputs, tmp_path):
    from diffusers import StableVideoDiffusionPipeline
    from PIL import Image

    _, manifest = inputs
    spec = make_spec(manifest, tmp_path / "out", video={"lossless": True})
    pipeline.run(spec, progress=False)
    row = _table(tmp_path / "out")[3]

    # Exactly the README's recipe: fit the image, then one plain diffusers call with the row's parameters.
    pipe = StableVideoDiffusionPipeline.from_pretrained(str(ensure_tiny_model()), torch_dtype=torch.float32)
    image = load_image(Path(row["source_uri"]).read_bytes(), row["width"], row["height"], row["fit"], 10**8)
    frames = pipe(
        Image.fromarray(image),
        width=row["width"],
        height=row["height"],
        num_frames=row["num_frames"],
        num_inference_steps=row["num_inference_steps"],
        fps=row["fps"],
        motion_bucket_id=row["motion_bucket_id"],
        noise_aug_strength=row["noise_aug_strength"],
        min_guidance_scale=row["min_guidance_scale"],
        max_guidance_scale=row["max_guidance_scale"],
        decode_chunk_size=row["decode_chunk_size"],
        generator=torch.Generator(row["device"]).manual_seed(row["seed"]),
        output_type="np",
    ).frames[0]
    expected = (frames * 255).round().astype(np.uint8)
    assert np.abs(decode(row["video_uri"]).astype(int) - expected.astype(int)).max() <= 1


def test_bad_spec_and_bad_manifest_fail_before_any_work(ray_cluster, inputs, tmp_path, capsys):
    folder, manifest = inputs
    job = tmp_path / "job.yaml"
    job.write_text(f"manifest: {{path: {manifest}}}\noutput: {{url: {tmp_path / 'out'}}}\n")
    assert main(["run", str(job), "--set", "render.fps=-3"]) == 2
    assert capsys.readouterr().err.strip() == (
        "svdbatch: error: render.fps: -3 is not allowed: Input should be greater than or equal to 1"
    )
    assert main(["run", str(job), "--set", "manifest.key_column=sku"]) == 1
    error = capsys.readouterr().err.strip()
    assert "no key column 'sku'" in error and "\n" not in error
    assert main(["run", str(job), "--set", f"model.source={tmp_path}/no-model"]) == 1
    assert "model.source" in capsys.readouterr().err
    assert not (tmp_path / "out" / "videos").exists()
