"""Staging weights without Ray: which files a pipeline loads (on a Hub listing), copy, resume, verification."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from helpers import SVD_INDEX, save_variant_model

from svdbatch.cli import main
from svdbatch.model.cache import COPY_RECORD, STAGE_RECORD, remote_copy
from svdbatch.model.identity import ModelError, cache_root, hub_cache, is_hub_id, pipeline_files
from svdbatch.model.staging import PROGRESS, stage

# stabilityai/stable-video-diffusion-img2vid-xt's files as the Hub lists them.
SVD_XT_LISTING = [
    ".gitattributes",
    "LICENSE",
    "README.md",
    "model_index.json",
    "svd_xt.safetensors",
    "svd_xt_image_decoder.safetensors",
    "output_tile.gif",
    "feature_extractor/preprocessor_config.json",
    "image_encoder/config.json",
    "image_encoder/model.fp16.safetensors",
    "image_encoder/model.safetensors",
    "scheduler/scheduler_config.json",
    "unet/config.json",
    "unet/diffusion_pytorch_model.fp16.safetensors",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.fp16.safetensors",
    "vae/diffusion_pytorch_model.safetensors",
]
CONFIGS = [
    "model_index.json",
    "unet/config.json",
    "vae/config.json",
    "image_encoder/config.json",
    "scheduler/scheduler_config.json",
    "feature_extractor/preprocessor_config.json",
]


def test_svd_xt_listing_stages_the_fp16_weights_and_every_config_only():
    configs, weights = pipeline_files(SVD_XT_LISTING, SVD_INDEX, "fp16")
    assert sorted(configs) == sorted(CONFIGS)
    assert sorted(weights) == [
        "image_encoder/model.fp16.safetensors",
        "unet/diffusion_pytorch_model.fp16.safetensors",
        "vae/diffusion_pytorch_model.fp16.safetensors",
    ]
    _, plain = pipeline_files(SVD_XT_LISTING, SVD_INDEX, None)
    assert sorted(plain) == [
        "image_encoder/model.safetensors",
        "unet/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
    ]


def test_bin_duplicates_are_never_picked_and_a_bin_only_component_fails_in_one_line():
    listing = [*SVD_XT_LISTING, "unet/diffusion_pytorch_model.fp16.bin", "vae/diffusion_pytorch_model.ckpt"]
    configs, weights = pipeline_files(listing, SVD_INDEX, "fp16")
    assert all(name.endswith(".json") for name in configs) and all(name.endswith(".safetensors") for name in weights)
    only_ckpt = [name for name in listing if not name.startswith("vae/diffusion_pytorch_model.") or ".ckpt" in name]
    with pytest.raises(ModelError, match=r"^vae/: no 'fp16' or plain .safetensors weights .found [a-z_]+\.ckpt"):
        pipeline_files(only_ckpt, SVD_INDEX, "fp16")


def test_hub_ids_are_told_from_paths_and_urls(tmp_path):
    assert is_hub_id("stabilityai/stable-video-diffusion-img2vid-xt")
    assert not any(is_hub_id(source) for source in ("svdbatch:tiny", "s3://b/m", "./m", "/m", str(tmp_path)))


def test_hub_downloads_land_in_the_node_cache_unless_hf_home_says_otherwise(monkeypatch):
    monkeypatch.delenv("HF_HOME", raising=False)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    assert hub_cache() == str(cache_root() / "huggingface" / "hub")
    monkeypatch.setenv("HF_HOME", "/volume/hf")
    assert hub_cache() is None  # huggingface_hub reads HF_HOME itself


@pytest.fixture
def pipeline(tmp_path) -> Path:
    """The tiny pipeline with fp32 and fp16 weights, a stray checkpoint, a duplicate .bin and an unrelated file."""
    folder = save_variant_model(tmp_path / "pipeline")
    (folder / "unet" / "diffusion_pytorch_model.fp16.bin").write_bytes(b"duplicate weights")
    (folder / "notes.txt").write_text("not part of the pipeline")
    return folder


def _expected(folder: Path) -> set[str]:
    weights = {str(path.relative_to(folder)) for path in folder.rglob("*.fp16.safetensors")}
    return weights | {name for name in CONFIGS if (folder / name).exists()}


def _files(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file()}


def test_stage_copies_the_variant_and_configs_records_hashes_and_reruns_copy_nothing(pipeline, tmp_path, capsys):
    staged = tmp_path / "staged"
    assert main(["model", "stage", str(pipeline), str(staged), "--variant", "fp16"]) == 0
    out = capsys.readouterr().out
    assert f"record: {staged}/{STAGE_RECORD}" in out and "use: model.source:" in out
    assert _files(staged) == _expected(pipeline) | {STAGE_RECORD}
    record = json.loads((staged / STAGE_RECORD).read_text())
    assert set(record["files"]) == _expected(pipeline) and record["variant"] == "fp16"
    for name, entry in record["files"].items():
        data = (pipeline / name).read_bytes()
        assert (entry["size"], entry["sha256"]) == (len(data), hashlib.sha256(data).hexdigest())
    assert record["bytes"] == sum(entry["size"] for entry in record["files"].values())
    written = (staged / STAGE_RECORD).stat().st_mtime_ns
    assert main(["model", "stage", str(pipeline), str(staged), "--variant", "fp16"]) == 0
    assert f"0 copied, {len(record['files'])} already there" in capsys.readouterr().out
    assert (staged / STAGE_RECORD).stat().st_mtime_ns == written  # nothing changed: not even the record


def test_an_interrupted_stage_resumes_with_the_missing_and_changed_files(pipeline, tmp_path):
    staged = tmp_path / "staged"
    first = stage(str(pipeline), str(staged), "fp16")
    assert sorted(first.copied) == sorted(_expected(pipeline))
    # What a killed run leaves: the progress file of what it verified, no record, some files missing; and one object
    # replaced since it was verified.
    (staged / STAGE_RECORD).rename(staged / PROGRESS)
    (staged / "vae" / "diffusion_pytorch_model.fp16.safetensors").unlink()
    unet = staged / "unet" / "diffusion_pytorch_model.fp16.safetensors"
    unet.write_bytes(bytes(unet.stat().st_size))  # same size, other bytes
    again = stage(str(pipeline), str(staged), "fp16")
    changed = ["unet/diffusion_pytorch_model.fp16.safetensors", "vae/diffusion_pytorch_model.fp16.safetensors"]
    assert sorted(again.copied) == changed
    assert unet.read_bytes() == (pipeline / "unet" / "diffusion_pytorch_model.fp16.safetensors").read_bytes()
    assert (staged / STAGE_RECORD).exists() and not (staged / PROGRESS).exists()


def test_a_stage_stopped_midway_leaves_no_record_and_the_rerun_copies_the_rest(pipeline, tmp_path):
    staged = tmp_path / "staged"

    def stopped(line: str) -> None:  # Ctrl-C right after the first file is verified: queued files never start
        raise KeyboardInterrupt(line)

    with pytest.raises(KeyboardInterrupt):
        stage(str(pipeline), str(staged), "fp16", say=stopped)
    assert not (staged / STAGE_RECORD).exists()
    verified = set(json.loads((staged / PROGRESS).read_text())["files"])
    assert verified and verified < _expected(pipeline)
    again = stage(str(pipeline), str(staged), "fp16")
    assert set(again.skipped) == verified and set(again.copied) == _expected(pipeline) - verified
    assert (staged / STAGE_RECORD).exists() and not (staged / PROGRESS).exists()


def test_changed_source_weights_are_staged_again(pipeline, tmp_path):
    staged = tmp_path / "staged"
    stage(str(pipeline), str(staged), "fp16")
    (pipeline / "vae" / "config.json").write_text('{"scaling_factor": 0.2}')
    assert stage(str(pipeline), str(staged), "fp16").copied == ["vae/config.json"]


def test_node_copy_is_verified_against_the_stage_record(pipeline, tmp_path):
    staged = tmp_path / "staged"
    stage(str(pipeline), str(staged), "fp16")
    copy = remote_copy(str(staged), {}, "fp16")
    assert json.loads((copy / COPY_RECORD).read_text())["verified"] == STAGE_RECORD
    vae = staged / "vae" / "diffusion_pytorch_model.fp16.safetensors"
    vae.write_bytes(bytes(vae.stat().st_size))  # damaged after staging: a new identity, a new node copy
    with pytest.raises(ModelError, match=r"vae/diffusion_pytorch_model.fp16.safetensors differs from svdbatch-stage"):
        remote_copy(str(staged), {}, "fp16")


def test_node_copy_of_files_the_stage_record_does_not_list_fails_naming_the_staged_variant(pipeline, tmp_path):
    staged = tmp_path / "staged"
    stage(str(pipeline), str(staged), None)
    stage(str(pipeline), str(staged), "fp16")  # the record now lists the fp16 files only
    with pytest.raises(ModelError, match=r"is not in svdbatch-stage.json \(staged with variant fp16\)"):
        remote_copy(str(staged), {}, None)


def test_a_variant_that_was_not_staged_fails_in_one_line_naming_model_variant(pipeline, tmp_path):
    staged = tmp_path / "staged"
    stage(str(pipeline), str(staged), "fp16")
    expected = rf"^model.source {staged}: \w+/: no plain .safetensors weights .found [a-z_]+.fp16.safetensors.; "
    with pytest.raises(ModelError, match=expected):
        remote_copy(str(staged), {}, None)


def test_stage_of_a_folder_that_is_no_pipeline_fails_in_one_line(tmp_path, capsys):
    assert main(["model", "stage", str(tmp_path), str(tmp_path / "out")]) == 1
    error = capsys.readouterr().err.strip()
    assert error == f"svdbatch: error: {tmp_path}: not a diffusers pipeline (no model_index.json)"


def test_stage_to_a_destination_that_cannot_be_read_fails_in_one_line(pipeline, tmp_path, capsys):
    occupied = tmp_path / "a-file"
    occupied.write_text("not a folder")
    assert main(["model", "stage", str(pipeline), str(occupied)]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"svdbatch: error: {occupied}: cannot be read (NotADirectoryError") and "\n" not in error
