"""Wan and LTX jobs on their tiny models, end to end on real local Ray clusters: a driver killed after its first
commit and rerun (every item once), a changed prompt re-rendering exactly its rows, MP4s decoded, and rows that
regenerate with plain diffusers from their metadata. One run per family, shared by the tests that read it."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from helpers import kill_after_first_commit, make_spec, write_images, write_manifest

from svdbatch.model import ltx, wan
from svdbatch.model.loading import ensure_tiny_model
from svdbatch.ray import driver
from svdbatch.render.images import load_image
from svdbatch.render.quality import psnr
from svdbatch.render.video import decode, probe

ITEMS = 16
RENDER = {
    wan: {"width": 32, "height": 32, "num_frames": 5, "num_inference_steps": 2, "fps": 16, "shift": 3.0},
    ltx: {"width": 32, "height": 32, "num_frames": 9, "num_inference_steps": 2, "fps": 25},
}
CHANGED = ("item-03", "item-10")


def _prompts(changed: tuple[str, ...] = ()) -> list[str | None]:
    """Row 0 has no prompt (the spec's applies); the rows in ``changed`` get a new one."""
    prompts = [None] + [f"a {'red' if index % 2 else 'blue'} kite, number {index}" for index in range(1, ITEMS)]
    return [f"{prompt}, at dusk" if f"item-{index:02d}" in changed else prompt for index, prompt in enumerate(prompts)]


def _rows(output: Path) -> list[dict]:
    return sorted(pq.read_table(output / "metadata").to_pylist(), key=lambda row: row["key"])


@pytest.fixture(scope="module", params=[wan, ltx], ids=["wan", "ltx"])
def family_run(request, ray_cluster, tmp_path_factory) -> SimpleNamespace:
    """A job killed after its first commit, rerun on the shared cluster, then run again with two prompts changed."""
    family, folder = request.param, tmp_path_factory.mktemp(request.param.NAME)
    images = write_images(folder / "images", 4)
    columns = {"key": [f"item-{index:02d}" for index in range(ITEMS)], "image": [images[i % 4] for i in range(ITEMS)]}
    manifest = write_manifest(folder / "manifest.parquet", {**columns, "prompt": _prompts()})
    render = {**RENDER[family], "prompt": "a kite", "negative_prompt": "blurry"}
    spec = make_spec(
        manifest, folder / "out", model={"source": family.TINY_SOURCE}, render=render, video={"lossless": True}
    )
    job = folder / "job.yaml"
    job.write_text(yaml.safe_dump(spec.model_dump(mode="json")))
    _, committed = kill_after_first_commit(job, folder / "out")
    resumed = driver.run(spec, progress=False)
    before = _rows(folder / "out")
    write_manifest(manifest, {**columns, "prompt": _prompts(CHANGED)})
    changed = driver.run(spec, progress=False)
    return SimpleNamespace(
        family=family, output=folder / "out", committed=committed, resumed=resumed, before=before, changed=changed
    )


def test_a_killed_job_resumes_and_renders_every_item_once(family_run):
    run = family_run
    assert 0 < run.committed < ITEMS
    assert (run.resumed.rendered, run.resumed.failed, run.resumed.skipped) == (ITEMS - run.committed, 0, run.committed)
    assert len({row["key"] for row in run.before}) == len(run.before) == ITEMS
    params = RENDER[run.family]
    for row in run.before:
        assert (row["status"], row["model_family"], row["negative_prompt"]) == ("ok", run.family.NAME, "blurry")
        assert row["guidance_scale"] == run.family.GUIDANCE_SCALE and row["motion_bucket_id"] is None
        info = probe(row["video_uri"])
        assert (info.width, info.height, info.frames, info.fps) == (32, 32, params["num_frames"], params["fps"])
    assert [row["prompt"] for row in run.before] == ["a kite", *_prompts()[1:]]


def test_a_changed_prompt_renders_exactly_its_rows_again(family_run):
    run = family_run
    assert (run.changed.rendered, run.changed.skipped, run.changed.rerendered) == (len(CHANGED), ITEMS - 2, 2)
    after = {row["key"]: row for row in _rows(run.output)}
    for before in run.before:
        row = after[before["key"]]
        if before["key"] in CHANGED:
            assert row["prompt"].endswith(", at dusk") and row["rerender_reason"] == "spec changed"
            assert row["run_id"] == run.changed.run_id and row["seed"] == before["seed"]
        else:
            assert (row["run_id"], row["sha256"]) == (before["run_id"], before["sha256"])


@pytest.mark.parametrize("index", [0, 5], ids=["spec-prompt", "row-prompt"])
def test_a_row_regenerates_with_plain_diffusers_from_its_metadata(family_run, index):
    """docs/guides/wan-and-ltx.md's recipe: load the folder, the row's scheduler shift, fit the image, one call."""
    import diffusers
    from PIL import Image

    row = _rows(family_run.output)[index]
    folder = ensure_tiny_model(family_run.family.TINY_SOURCE)
    pipe = getattr(diffusers, family_run.family.PIPELINE).from_pretrained(str(folder), torch_dtype=torch.float32)
    if row["shift"] is not None:
        pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, shift=row["shift"])
    image = load_image(Path(row["source_uri"]).read_bytes(), row["width"], row["height"], row["fit"], 10**8)
    frame_rate = {"frame_rate": row["fps"]} if row["model_family"] == "ltx" else {}
    frames = pipe(
        Image.fromarray(image),
        prompt=row["prompt"],
        negative_prompt=row["negative_prompt"],
        width=row["width"],
        height=row["height"],
        num_frames=row["num_frames"],
        num_inference_steps=row["num_inference_steps"],
        guidance_scale=row["guidance_scale"],
        generator=torch.Generator(row["device"]).manual_seed(row["seed"]),
        output_type="np",
        **frame_rate,
    ).frames[0]
    expected = (frames * 255).round().astype(np.uint8)
    assert psnr(decode(row["video_uri"]), expected) >= 80
