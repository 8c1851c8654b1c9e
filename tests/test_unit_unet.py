"""model.unet: UNet weights from a file or a folder (local or object store) over model.source's, on the tiny model."""

from __future__ import annotations

import shutil
from pathlib import Path

import fsspec
import numpy as np
import pytest
import torch
from helpers import TEST_RENDER, perturbed_weights
from safetensors.torch import load_file, save_file

from svdbatch.demo import sample_image
from svdbatch.items.expand import expand_row
from svdbatch.model.cache import resolve_unet
from svdbatch.model.identity import ModelError, model_identity
from svdbatch.model.loading import ensure_tiny_model, load_pipeline, load_unet_weights, resolve_source
from svdbatch.render.generate import call_pipeline, to_uint8
from svdbatch.spec.config import RenderParams
from svdbatch.spec.load import build_spec

PARAMS = {**RenderParams().model_dump(), **TEST_RENDER}  # what call_pipeline gets from an item


@pytest.fixture(scope="module")
def unets(tmp_path_factory) -> dict[str, Path]:
    """The tiny model's UNet with every weight nudged, as one .safetensors file and as a diffusers UNet folder."""
    base = ensure_tiny_model() / "unet"
    root = tmp_path_factory.mktemp("unets")
    data = perturbed_weights((base / "diffusion_pytorch_model.safetensors").read_bytes())
    (root / "tuned.safetensors").write_bytes(data)
    (root / "folder").mkdir()
    shutil.copy(base / "config.json", root / "folder" / "config.json")
    (root / "folder" / "diffusion_pytorch_model.safetensors").write_bytes(data)
    return {"file": root / "tuned.safetensors", "folder": root / "folder", "root": root}


def _spec(unet: str | None = None):
    model = {"source": str(ensure_tiny_model()), "unet": unet, "device": "cpu"}
    return build_spec({"manifest": {"path": "m"}, "output": {"url": "/o"}, "model": model})


def _frames(spec) -> np.ndarray:
    torch.set_num_threads(1)
    model = spec.model
    pipe = load_pipeline(model, "cpu", resolve_source(model), resolve_unet(model))
    return to_uint8(call_pipeline(pipe, [sample_image(0, 64, 64)], [5], PARAMS, "cpu"))


def _fingerprint(spec) -> str:
    identities = {"model": model_identity(spec.model)}
    return expand_row({"key": "a", "image": "/a.png"}, spec, "run", "/o", identities=identities)[0]["fingerprint"]


def test_a_unet_file_or_folder_loads_over_the_base_and_changes_frames_and_fingerprint(unets):
    base, from_file, from_folder = (_spec(), _spec(str(unets["file"])), _spec(str(unets["folder"])))
    frames = {name: _frames(spec) for name, spec in (("base", base), ("file", from_file), ("folder", from_folder))}
    assert not np.array_equal(frames["base"], frames["file"])
    assert np.array_equal(frames["file"], frames["folder"])  # the same weights, however they are shipped
    identities = {model_identity(spec.model) for spec in (base, from_file, from_folder)}
    assert len(identities) == 3 and model_identity(from_file.model).startswith(model_identity(base.model) + "+unet:")
    assert len({_fingerprint(spec) for spec in (base, from_file, from_folder)}) == 3


def test_new_weights_under_the_same_name_change_the_identity(unets, tmp_path):
    copy = tmp_path / "tuned.safetensors"
    shutil.copy(unets["file"], copy)
    before = model_identity(_spec(str(copy)).model)
    copy.write_bytes(perturbed_weights(copy.read_bytes()))
    assert model_identity(_spec(str(copy)).model) != before


def test_a_unet_from_an_object_store_is_copied_once_per_node(unets):
    store = fsspec.filesystem("memory")
    store.pipe("/bucket/tuned.safetensors", unets["file"].read_bytes())
    spec = _spec("memory://bucket/tuned.safetensors")
    local, identity = resolve_unet(spec.model), model_identity(spec.model)
    assert Path(local).read_bytes() == unets["file"].read_bytes() and resolve_unet(spec.model) == local
    store.pipe("/bucket/tuned.safetensors", b"new weights")  # the memory store versions by size, as S3 by ETag
    assert model_identity(spec.model) != identity and resolve_unet(spec.model) != local  # new weights: a new copy


def _broken(tmp_path: Path, unets, change) -> str:
    weights = load_file(unets["file"])
    change(weights)
    save_file(weights, tmp_path / "bad.safetensors")
    return str(tmp_path / "bad.safetensors")


def test_a_file_that_does_not_fit_fails_in_one_line(unets, tmp_path):
    unet = load_pipeline(_spec().model, "cpu", resolve_source(_spec().model)).unet
    first = next(iter(load_file(unets["file"])))

    def renamed(weights):
        weights["model.diffusion_model." + first] = weights.pop(first)

    def reshaped(weights):
        weights[first] = torch.zeros(3, 3)

    cases = {
        "renamed": (renamed, rf"1 missing keys \({first}\); 1 unexpected keys \(model.diffusion_model.{first}\)$"),
        "reshaped": (reshaped, rf"{first} is \[3, 3\] there, \[.*\] in model.source's UNet$"),
    }
    for change, message in cases.values():
        path = _broken(tmp_path, unets, change)
        with pytest.raises(ModelError, match=rf"^model.unet {path}: does not fit model.source's UNet: {message}"):
            load_unet_weights(unet, path, path, None)
    (tmp_path / "junk.safetensors").write_bytes(b"not weights")
    with pytest.raises(ModelError, match=r"^model.unet j: junk.safetensors is not a safetensors file") as error:
        load_unet_weights(unet, str(tmp_path / "junk.safetensors"), "j", None)
    assert "\n" not in str(error.value)
    with pytest.raises(ModelError, match=r"model.unet .*/nowhere.safetensors: no such file or folder"):
        model_identity(_spec(str(tmp_path / "nowhere.safetensors")).model)
