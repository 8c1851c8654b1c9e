"""The whole job on a real local Ray cluster with the tiny model: videos and metadata, checked by decoding."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from helpers import make_spec, write_images, write_manifest

from svdbatch.cli import main
from svdbatch.items.keys import derive_seed
from svdbatch.model.loading import ensure_tiny_model
from svdbatch.ray import driver
from svdbatch.render.images import load_image
from svdbatch.render.video import decode, probe


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inputs")
    images = write_images(folder / "images", 5)
    manifest = write_manifest(folder / "manifest.parquet", {"key": [f"k{i}" for i in range(5)], "image": images})
    return folder, manifest


def _table(output: Path) -> list[dict]:
    return sorted(pq.read_table(output / "metadata").to_pylist(), key=lambda row: (row["key"], row["variant"]))


@pytest.fixture(scope="module")
def job(ray_cluster, inputs, tmp_path_factory):
    """One run shared by the tests that read it: five images in two variants, and a key whose image is missing."""
    folder, _ = inputs
    images = sorted(str(path) for path in (folder / "images").glob("*.png"))
    keys = ["k0", "k1", "gone", "k2", "k3", "k4"]
    paths = [*images[:2], str(folder / "nope.png"), *images[2:]]
    manifest = write_manifest(folder / "with-missing.parquet", {"key": keys, "image": paths})
    output = tmp_path_factory.mktemp("job") / "out"
    return driver.run(make_spec(manifest, output, seeds={"variants": 2}), progress=False), output


def test_job_end_to_end_writes_decodable_videos_and_matching_metadata(job):
    summary, output = job
    assert (summary.rendered, summary.failed) == (10, 2)
    rows = [row for row in _table(output) if row["key"] != "gone"]
    assert len(rows) == 10 and {row["status"] for row in rows} == {"ok"}
    for row in rows:
        assert row["seed"] == derive_seed(7, row["key"], row["variant"])
        data = Path(row["video_uri"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == row["sha256"] and len(data) == row["bytes"]
        info = probe(row["video_uri"])
        assert (info.codec, info.pixel_format, info.width, info.height) == ("h264", "yuv420p", 64, 64)
        assert (info.frames, info.fps) == (8, 6)
    assert (output / "_job" / "summary.json").exists()


def test_missing_image_is_an_error_row_per_variant_and_the_rest_complete(job):
    _, output = job
    bad = [row for row in _table(output) if row["status"] == "error"]
    assert [(row["key"], row["variant"]) for row in bad] == [("gone", 0), ("gone", 1)]
    assert all("nope.png" in row["error"] and "not found" in row["error"] for row in bad)
    assert all(row["video_uri"] is None for row in bad)


def _frames_by_item(output: Path) -> dict:
    return {(row["key"], row["variant"]): (row["seed"], decode(row["video_uri"])) for row in _table(output)}


@pytest.fixture(scope="module")
def lossless_runs(ray_cluster, inputs, tmp_path_factory) -> dict[str, Path]:
    """Three items in two variants, rendered losslessly with three batch sizes and actor counts: 6 items, so batch 4
    gives one full batch and one short one, and two actors split the items between them."""
    folder, _ = inputs
    root = tmp_path_factory.mktemp("lossless")
    images = sorted(str(path) for path in (folder / "images").glob("*.png"))[:3]
    manifest = write_manifest(root / "m.parquet", {"key": ["k0", "k1", "k2"], "image": images})
    outputs = {}
    for name, compute in {"b1a1": {"batch_size": 1}, "b4a1": {"batch_size": 4}, "b1a2": {"actors": 2}}.items():
        spec = make_spec(manifest, root / name, seeds={"variants": 2}, video={"lossless": True}, compute=compute)
        assert driver.run(spec, progress=False).rendered == 6
        outputs[name] = root / name
    return outputs


def test_batch_size_and_actor_count_do_not_change_seeds_or_frames(lossless_runs):
    runs = {name: _frames_by_item(output) for name, output in lossless_runs.items()}
    reference = runs["b1a1"]
    for name, frames in runs.items():
        assert frames.keys() == reference.keys()
        for item, (seed, video) in frames.items():
            assert seed == reference[item][0], name
            assert np.abs(video.astype(int) - reference[item][1].astype(int)).max() <= 1, (name, item)


def test_metadata_row_regenerates_its_video_with_plain_diffusers(lossless_runs):
    from diffusers import StableVideoDiffusionPipeline
    from PIL import Image

    row = _table(lossless_runs["b1a1"])[3]

    # Exactly docs/design.md's recipe: fit the image, then one plain diffusers call with the row's parameters.
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
