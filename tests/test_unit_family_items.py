"""Unit tests: Wan and LTX items from the spec to frames, without Ray: the family the driver reads, what an item of
each family carries and fingerprints, the checks before any work, and the generation stage on the tiny models."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest
from helpers import make_spec, write_images, write_manifest
from PIL import Image

from svdbatch.errors import JobError
from svdbatch.items.expand import expand_batch, expand_row
from svdbatch.items.metadata import to_table
from svdbatch.model import ltx, wan
from svdbatch.model.identity import ModelError, model_family
from svdbatch.ray import driver
from svdbatch.render.generate import VideoGenerator, to_uint8
from svdbatch.render.images import load_image
from svdbatch.spec.config import ModelSpec
from svdbatch.spec.load import build_spec

RENDER = {
    wan: {"width": 32, "height": 32, "num_frames": 5, "num_inference_steps": 2, "fps": 16, "shift": 3.0},
    ltx: {"width": 32, "height": 32, "num_frames": 9, "num_inference_steps": 2, "fps": 25},
}
IDENTITIES = {"model": "m1", "sources": {"/i/a.png": "v1", "/i/b.png": "v1"}}


def _spec(family, **render):
    return build_spec(
        {
            "manifest": {"path": "/m.parquet"},
            "output": {"url": "/out"},
            "model": {"source": family.TINY_SOURCE, "device": "cpu"},
            "render": {**RENDER[family], "prompt": "a red kite", "negative_prompt": "blurry", **render},
            "seeds": {"base_seed": 3, "variants": 2},
            "compute": {"torch_threads": 2},
        }
    )


def _items(family, row=None, **render):
    identities = {**IDENTITIES, "family": family.NAME}
    spec = _spec(family, **render)
    return expand_row({"key": "a", "image": "/i/a.png", **(row or {})}, spec, "r", "/o", None, identities)


def test_svd_fingerprints_are_those_of_the_version_before_families():
    """Pinned from the code before Wan and LTX: every committed SVD item stays done after the upgrade."""
    spec = build_spec({"manifest": {"path": "/m.parquet"}, "output": {"url": "/out"}, "seeds": {"variants": 2}})
    identities = {**IDENTITIES, "family": "svd"}
    items = expand_row({"key": "a", "image": "/i/a.png"}, spec, "r", "/o", None, identities)
    assert [item["fingerprint"] for item in items] == SVD_FINGERPRINTS
    assert all(item["prompt"] is None and item["guidance_scale"] is None for item in items)
    table = pa.table({"key": ["a"], "image": ["/i/a.png"]})
    assert expand_batch(table, spec, "r", "/o", None, identities).column("fingerprint").to_pylist() == SVD_FINGERPRINTS


SVD_FINGERPRINTS = ["00ab43fdae54a7668755a6cf96b13cb3", "314a3a23e429a1ea9cab47b0f44a78ce"]


@pytest.mark.parametrize("family", [wan, ltx], ids=["wan", "ltx"])
def test_an_item_carries_its_familys_parameters_and_null_for_svds(family):
    (item, other) = _items(family)
    assert item["model_family"] == family.NAME and item["guidance_scale"] == family.GUIDANCE_SCALE
    assert (item["prompt"], item["negative_prompt"]) == ("a red kite", "blurry")
    assert item["motion_bucket_id"] is item["max_guidance_scale"] is item["decode_chunk_size"] is None
    assert item["seed"] != other["seed"] and item["fingerprint"] != other["fingerprint"]


@pytest.mark.parametrize(
    "change",
    [{"prompt": "a blue kite"}, {"negative_prompt": ""}, {"guidance_scale": 1.0}, {"shift": 5.0}],
    ids=["prompt", "negative", "guidance", "shift"],
)
def test_prompts_guidance_and_shift_shape_the_fingerprint(change):
    assert _items(wan)[0]["fingerprint"] != _items(wan, **change)[0]["fingerprint"]
    assert _items(wan)[0]["seed"] == _items(wan, **change)[0]["seed"]  # seeds never depend on the prompt


@pytest.mark.parametrize("family", [wan, ltx], ids=["wan", "ltx"])
def test_batch_expansion_of_a_prompted_family_matches_per_row(family):
    spec, identities = _spec(family), {**IDENTITIES, "family": family.NAME}
    table = pa.table({"key": ["a", "b", ""], "image": ["/i/a.png", "/i/b.png", "/i/e.png"]})
    per_row = [item for row in table.to_pylist() for item in expand_row(row, spec, "r", "/o", None, identities)]
    assert expand_batch(table, spec, "r", "/o", None, identities).to_pylist() == to_table(per_row).to_pylist()


@pytest.mark.parametrize(
    ("prompt", "error"),
    [
        (5, "row 'a': column prompt: 5 is not text"),
        (b"bytes", "row 'a': column prompt: b'bytes' is not text"),
        ("x" * 10_001, "row 'a': column prompt: 10,001 characters, at most 10,000 (the text encoder reads a few "
         "hundred tokens of it)"),
    ],
    ids=["number", "bytes", "huge"],
)
def test_a_prompt_that_is_not_text_or_is_huge_is_an_error_row_naming_the_column(prompt, error):
    (row,) = _items(wan, {"prompt": prompt})
    assert (row["status"], row["error"]) == ("error", error)


@pytest.mark.parametrize("prompt", ["", "tab\tnul\x00bell\x07 é 猫", "y" * 10_000], ids=["empty", "control", "long"])
def test_any_other_text_is_the_prompt_as_given(prompt):
    items = _items(ltx, {"prompt": prompt, "negative_prompt": None})
    found = [(item["status"], item["prompt"], item["negative_prompt"]) for item in items]
    assert found == [("ok", prompt, "blurry")] * 2


def test_variants_cycle_through_the_prompt_sweep_unless_the_row_has_a_prompt():
    spec = _spec(wan).model_copy(deep=True)
    spec.seeds.prompt_sweep = ["at dawn", "at dusk", "at night"]
    spec.seeds.variants = 4
    identities = {**IDENTITIES, "family": "wan"}
    swept = expand_row({"key": "a", "image": "/i/a.png"}, spec, "r", "/o", None, identities)
    assert [item["prompt"] for item in swept] == ["at dawn", "at dusk", "at night", "at dawn"]
    own = expand_row({"key": "a", "image": "/i/a.png", "prompt": "mine"}, spec, "r", "/o", None, identities)
    assert {item["prompt"] for item in own} == {"mine"}
    table = pa.table({"key": ["a"], "image": ["/i/a.png"]})
    assert expand_batch(table, spec, "r", "/o", None, identities).to_pylist() == to_table(swept).to_pylist()


def test_an_svd_job_ignores_prompt_columns_and_keeps_its_fingerprints():
    spec = build_spec({"manifest": {"path": "/m.parquet"}, "output": {"url": "/out"}, "seeds": {"variants": 2}})
    identities = {**IDENTITIES, "family": "svd"}
    table = pa.table({"key": ["a"], "image": ["/i/a.png"], "prompt": ["a cat"], "guidance_scale": [9.0]})
    items = expand_batch(table, spec, "r", "/o", None, identities).to_pylist()
    assert [item["fingerprint"] for item in items] == SVD_FINGERPRINTS
    assert {(item["prompt"], item["guidance_scale"]) for item in items} == {(None, None)}


def test_a_row_whose_own_parameters_the_family_cannot_take_is_an_error_row():
    (row,) = _items(ltx, {"num_frames": 12})
    assert row["status"] == "error"
    assert row["error"] == "row 'a': num_frames 12: ltx renders 8k+1 frames (e.g. 9 or 17)"


def test_model_family_is_read_from_the_pipeline_class_or_named(tmp_path):
    assert [model_family(ModelSpec(source=family.TINY_SOURCE)) for family in (wan, ltx)] == ["wan", "ltx"]
    assert model_family(ModelSpec()) == "svd"
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "LTXImageToVideoPipeline"}))
    assert model_family(ModelSpec(source=str(folder))) == "ltx"
    assert model_family(ModelSpec(source=str(folder), family="wan")) == "wan"
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "CogVideoXImageToVideoPipeline"}))
    with pytest.raises(ModelError, match="CogVideoXImageToVideoPipeline is not supported"):
        model_family(ModelSpec(source=str(folder)))


@pytest.mark.parametrize(
    ("model", "sections", "message"),
    [
        ("svdbatch:tiny", {"render": {"prompt": "a cat"}}, "is svd: render.prompt: StableVideoDiffusionPipeline does "
         "not read it (Wan and LTX do)"),
        ("svdbatch:tiny-ltx", {"render": {"num_frames": 24}}, "is ltx: render.num_frames 24: ltx renders 8k+1 frames"),
        ("svdbatch:tiny-wan", {"render": {"num_frames": 9}, "seeds": {"motion_sweep": [1, 2]}},
         "model.source svdbatch:tiny-wan is wan: seeds.motion_sweep: sweeps SVD's motion_bucket_id"),
    ],
    ids=["svd-prompt", "ltx-frames", "wan-motion"],
)
def test_spec_settings_the_family_cannot_take_fail_before_any_work(tmp_path, model, sections, message):
    manifest = write_manifest(tmp_path / "m.parquet", {"key": ["a"], "image": write_images(tmp_path / "i", 1)})
    spec = make_spec(manifest, tmp_path / "out", model={"source": model}, **sections)
    with pytest.raises(JobError, match=re.escape(message)):
        driver.preflight(spec)


def test_family_modules_and_the_item_expansion_import_no_torch():
    code = "import sys, svdbatch.model.families, svdbatch.items.expand; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "False"


@pytest.fixture(scope="module", params=[wan, ltx], ids=["wan", "ltx"])
def generator(request):
    return request.param, VideoGenerator(_spec(request.param))


def _with_image(item: dict) -> dict:
    image = Image.fromarray(np.random.RandomState(1).randint(0, 256, (48, 40, 3), dtype=np.uint8))
    return dict(item, image=load_image(_png(image), item["width"], item["height"], "crop", 10**8).tobytes())


def _png(image: Image.Image) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_the_generator_renders_each_item_with_its_seed_as_the_family_call_does(generator):
    family, make = generator
    rows = [_with_image(item) for item in _items(family)]
    out = make(to_table(rows)).to_pylist()
    assert [row["status"] for row in out] == ["ok", "ok"] and {row["batch_items"] for row in out} == {1}
    params = RENDER[family]
    for row, item in zip(out, rows, strict=True):
        frames = np.frombuffer(row["frames"], np.uint8).reshape(params["num_frames"], 32, 32, 3)
        image = Image.fromarray(np.frombuffer(item["image"], np.uint8).reshape(32, 32, 3))
        alone = to_uint8(family.call(make.pipe, image, item, item["seed"], "cpu").unsqueeze(0))[0]
        assert np.array_equal(frames, alone)
    assert not np.array_equal(out[0]["frames"], out[1]["frames"])


def test_rows_planned_for_another_family_or_size_become_error_rows(generator):
    family, make = generator
    (item, _) = _items(family)
    other = "ltx" if family is wan else "wan"
    rows = [_with_image(dict(item, model_family=other)), dict(_with_image(item), width=40, image=b"")]
    out = make(to_table(rows)).to_pylist()
    assert out[0]["error"] == (
        f"generate 'a' v0: planned as {other}, but model.source is {family.PIPELINE}: set model.family"
    )
    assert out[1]["error"].startswith(f"generate 'a' v0: width x height 40x32: {family.NAME} needs multiples of")


def test_a_named_family_the_model_is_not_stops_the_actor_in_one_line():
    spec = _spec(wan).model_copy(update={"model": ModelSpec(source=wan.TINY_SOURCE, device="cpu", family="ltx")})
    with pytest.raises(ModelError) as raised:
        VideoGenerator(spec)
    assert str(raised.value) == "model.family ltx: model.source svdbatch:tiny-wan is WanImageToVideoPipeline (wan)"



def test_tune_counts_each_rows_flops_by_its_family():
    """tune's PFLOP/video column: SVD-XT's count for an SVD row, the full-size LTX-Video 2B count for an LTX row of a
    tiny model (whose configs the driver cannot read before a process built it)."""
    from svdbatch.estimate.family_cost import pflop_per_video
    from svdbatch.estimate.gpu_time import video_flop

    spec = _spec(ltx)
    (row,) = _items(ltx)[:1]
    svd_spec = build_spec({"manifest": {"path": "/m"}, "output": {"url": "/o"}})
    svd_row = expand_row({"key": "a", "image": "/i/a.png"}, svd_spec, "r", "/o")[0]
    counted = ltx.video_flops(ltx.LTX_2B, ltx.LTX_VAE, 32, 32, 9, 2, ltx.GUIDANCE_SCALE)["total"] / 1e15
    assert pflop_per_video(spec, [svd_row, row]) == [video_flop(svd_row, spec.model.step_cache) / 1e15, counted]
