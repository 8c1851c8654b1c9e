"""Job spec validation: defaults, one-line errors, --set overrides. No Ray."""

from __future__ import annotations

import pytest

from svdbatch.spec.config import JobSpec, SpecError
from svdbatch.spec.load import build_spec, load_spec
from svdbatch.spec.reference import reference

BASE = {"manifest": {"path": "m.parquet"}, "output": {"url": "/out"}}


def test_defaults_follow_svd_xt():
    render = build_spec(BASE).render
    assert (render.width, render.height, render.num_frames, render.num_inference_steps) == (1024, 576, 25, 25)
    assert (render.fps, render.motion_bucket_id, render.noise_aug_strength) == (7, 127, 0.02)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("render.fps=0", "render.fps: 0 is not allowed: Input should be greater than or equal to 1"),
        ("render.width=100", "render.width: 100 is not allowed: Input should be a multiple of 8"),
        ("model.dtype=fp64", "model.dtype: 'fp64' is not allowed: Input should be 'auto', 'fp32', 'fp16' or 'bf16'"),
        ("seeds.variants=-2", "seeds.variants: -2 is not allowed"),
        ("render.colour=red", "render.colour: unknown field"),
        ("compute.batch_size=many", "compute.batch_size: 'many' is not allowed"),
    ],
)
def test_bad_value_fails_with_one_line_naming_field_value_and_rule(override, expected):
    with pytest.raises(SpecError) as caught:
        build_spec(BASE, [override])
    message = str(caught.value)
    assert message.startswith(expected)
    assert "\n" not in message


def test_guidance_order_is_checked():
    with pytest.raises(SpecError, match="min_guidance_scale"):
        build_spec(BASE, ["render.min_guidance_scale=5", "render.max_guidance_scale=2"])


def test_missing_section_is_named():
    with pytest.raises(SpecError, match="^output: required field is missing$"):
        build_spec({"manifest": {"path": "m"}})


def test_set_overrides_are_typed_and_nested(tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text("manifest: {path: m.parquet}\noutput: {url: /out}\nrender: {fps: 8}\n")
    spec = load_spec(job, ["render.fps=12", "seeds.variants=3", "model.variant=fp16", "video.lossless=true"])
    assert spec.render.fps == 12 and spec.seeds.variants == 3
    assert spec.model.variant == "fp16" and spec.video.lossless is True


@pytest.mark.parametrize("override", ["render.fps", "=3", ""])
def test_malformed_set_is_rejected(override):
    with pytest.raises(SpecError, match="expected section.field=value"):
        build_spec(BASE, [override])


def test_unreadable_and_non_mapping_specs_are_one_line(tmp_path):
    with pytest.raises(SpecError, match="cannot read"):
        load_spec(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(SpecError, match="a job spec is a mapping"):
        load_spec(bad)


def test_every_field_is_described():
    def walk(model):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"
            annotation = field.annotation
            if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
                walk(annotation)

    walk(JobSpec)
    assert any(line.strip().startswith("render.fps = 7") for line in reference())


@pytest.mark.parametrize(
    ("spec", "overrides", "suggestion"),
    [
        ({**BASE, "rendr": {"fps": 8}}, [], "rendr: unknown field (did you mean render?"),
        ({"manifest": {"pth": "m"}, "output": {"url": "/out"}}, [], "did you mean manifest.path?"),
        (BASE, ["render.num_inference_step=3"], "did you mean render.num_inference_steps?"),
        (BASE, ["model.step_cache.intervl=2"], "did you mean model.step_cache.interval?"),
        (BASE, ["compute.actors.mx=2"], "did you mean compute.actors.max?"),
    ],
)
def test_a_typo_is_answered_with_the_nearest_field_at_every_level(spec, overrides, suggestion):
    with pytest.raises(SpecError) as caught:
        build_spec(spec, overrides)
    assert suggestion in str(caught.value)
    assert "'svdbatch spec' lists every field" in str(caught.value)


def test_a_name_like_no_field_gets_no_guess():
    with pytest.raises(SpecError, match=r"render.colour: unknown field \(check the spelling"):
        build_spec(BASE, ["render.colour=red"])
