"""Unit tests: the tiny Wan and LTX models, built offline from the real classes, and their family modules."""

import numpy as np
import pytest
import torch
from PIL import Image

from svdbatch.model import ltx, wan
from svdbatch.model.families import FAMILIES, pipeline_class
from svdbatch.model.identity import ModelError
from svdbatch.model.loading import ensure_tiny_model, load_pipeline, resolve_source
from svdbatch.render.quality import psnr
from svdbatch.spec.config import ModelSpec


def _image(width: int, height: int) -> Image.Image:
    return Image.fromarray(np.random.RandomState(0).randint(0, 256, (height, width, 3), dtype=np.uint8))


PARAMS = {
    wan: dict(width=32, height=32, num_frames=5, num_inference_steps=2, guidance_scale=5.0, shift=3.0, fps=16),
    ltx: dict(width=32, height=32, num_frames=9, num_inference_steps=2, guidance_scale=3.0, fps=25),
}


@pytest.fixture(scope="module", params=[wan, ltx], ids=["wan", "ltx"])
def family(request):
    return request.param


@pytest.fixture(scope="module")
def loaded(family):
    spec = ModelSpec(source=family.TINY_SOURCE, device="cpu")
    path = resolve_source(spec)
    return path, load_pipeline(spec, "cpu", path)


def _render(family, pipe, prompt: str, seed: int = 7) -> np.ndarray:
    params = dict(PARAMS[family], prompt=prompt, negative_prompt="blurry")
    frames = family.call(pipe, _image(params["width"], params["height"]), params, seed, "cpu")
    return (frames * 255).round().clamp(0, 255).to(torch.uint8).numpy()


def test_tiny_source_is_cached_as_a_diffusers_folder_of_its_pipeline_class(family, loaded):
    path, pipe = loaded
    assert pipeline_class(path) == family.PIPELINE == type(pipe).__name__
    assert FAMILIES[pipeline_class(path)] is family


def test_tiny_model_renders_two_steps_at_the_requested_size(family, loaded):
    video = _render(family, loaded[1], "a red kite over the sea")
    params = PARAMS[family]
    assert video.shape == (params["num_frames"], 3, params["height"], params["width"])
    assert video.std() > 0


def test_same_seed_renders_the_same_video_twice_on_one_pipeline(family, loaded):
    assert np.array_equal(_render(family, loaded[1], "a cat"), _render(family, loaded[1], "a cat"))


def test_prompt_and_seed_each_change_the_video(family, loaded):
    base = _render(family, loaded[1], "a cat")
    assert not np.array_equal(base, _render(family, loaded[1], "a dog"))
    assert not np.array_equal(base, _render(family, loaded[1], "a cat", seed=8))


@pytest.mark.parametrize("prompt", ["", "x" * 100_000, "tab\tnul\x00bell\x07 é 猫"], ids=["empty", "huge", "control"])
def test_hostile_prompts_render_truncated_by_the_tokenizer(family, loaded, prompt):
    assert _render(family, loaded[1], prompt).shape[0] == PARAMS[family]["num_frames"]


def test_plain_diffusers_from_the_cached_folder_reproduces_the_video(family, loaded):
    """What a user does with a metadata row: load the folder with diffusers, set the scheduler, one call."""
    import diffusers

    path, pipe = loaded
    ours = _render(family, pipe, "a boat")
    plain = getattr(diffusers, family.PIPELINE).from_pretrained(path, torch_dtype=torch.float32)
    params = dict(PARAMS[family], prompt="a boat", negative_prompt="blurry")
    kwargs = {"frame_rate": params["fps"]} if family is ltx else {}
    if params.get("shift"):
        plain.scheduler = type(plain.scheduler).from_config(plain.scheduler.config, shift=params["shift"])
    frames = plain(
        _image(32, 32),
        prompt="a boat",
        negative_prompt="blurry",
        height=32,
        width=32,
        num_frames=params["num_frames"],
        num_inference_steps=2,
        guidance_scale=params["guidance_scale"],
        generator=torch.Generator("cpu").manual_seed(7),
        output_type="pt",
        **kwargs,
    ).frames[0]
    again = (frames * 255).round().clamp(0, 255).to(torch.uint8).numpy()
    assert psnr(ours, again) >= 80


@pytest.mark.parametrize(
    ("family", "change", "message"),
    [
        (wan, {"num_frames": 8}, "wan renders 4k+1 frames (e.g. 5 or 9)"),
        (wan, {"width": 40}, "wan needs multiples of 16"),
        (wan, {"shift": 0.0}, "shift 0.0: must be above 0"),
        (ltx, {"num_frames": 12}, "ltx renders 8k+1 frames (e.g. 9 or 17)"),
        (ltx, {"height": 48}, "ltx needs multiples of 32"),
    ],
)
def test_render_parameters_a_family_cannot_take_are_named(family, change, message):
    (problem,) = family.problems({**PARAMS[family], **change})
    assert message in problem


def test_valid_parameters_have_no_problems():
    assert wan.problems(PARAMS[wan]) == [] and ltx.problems(PARAMS[ltx]) == []


def test_a_pipeline_class_without_a_family_fails_in_one_line(tmp_path):
    """Wan's text-to-video pipeline loads from the tiny I2V folder less its image encoder, and is refused."""
    import json
    import shutil

    folder = tmp_path / "t2v"
    shutil.copytree(resolve_source(ModelSpec(source=wan.TINY_SOURCE)), folder)
    index = json.loads((folder / "model_index.json").read_text())
    del index["image_encoder"], index["image_processor"]
    (folder / "model_index.json").write_text(json.dumps({**index, "_class_name": "WanPipeline"}))
    spec = ModelSpec(source=str(folder), device="cpu")
    with pytest.raises(ModelError) as raised:
        load_pipeline(spec, "cpu", str(folder))
    assert str(raised.value) == (
        f"model.source {folder}: WanPipeline is not supported (svdbatch renders StableVideoDiffusionPipeline, "
        "WanImageToVideoPipeline, LTXImageToVideoPipeline)"
    )


def test_the_svd_tiny_model_is_still_the_default():
    assert pipeline_class(ensure_tiny_model()) == "StableVideoDiffusionPipeline"


@pytest.mark.parametrize(
    ("option", "named"),
    [
        ({"step_cache": {"enabled": True}}, "model.step_cache"),
        ({"scheduler": {"name": "consistency"}}, "model.scheduler"),
        ({"compile_unet": True}, "model.compile_unet"),
    ],
)
def test_unet_options_are_refused_in_one_line_for_a_model_without_a_unet(option, named):
    spec = ModelSpec(source=wan.TINY_SOURCE, device="cpu", **option)
    expected = f"{named}: StableVideoDiffusionPipeline only; model.source svdbatch:tiny-wan is WanImageToVideoPipeline"
    with pytest.raises(ModelError) as raised:
        load_pipeline(spec, "cpu", resolve_source(spec))
    assert str(raised.value) == expected
