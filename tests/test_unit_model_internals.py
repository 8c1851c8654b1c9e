"""Every diffusers and torch internal svdbatch relies on (svdbatch/model/internals.py) is where and what it was on the
releases it was checked on: each attribute, source and config key is inspected here, so an upgrade that moves one
fails this test by name instead of quietly changing the frames. pyproject.toml accepts only the diffusers release line
tested (constraints.txt)."""

from __future__ import annotations

import ast
import hashlib
import inspect
import json
import re
import tomllib
from pathlib import Path

import pytest
import torch

from svdbatch.model import internals

ROOT = Path(__file__).resolve().parents[1]
INTERNALS = Path(internals.__file__)


def _checked(what: str, installed: str) -> str:
    return f"{what} (checked on {installed}): compare it with svdbatch/model/internals.py and update both"


def test_every_function_names_the_release_it_was_checked_on():
    tree = ast.parse(INTERNALS.read_text())
    functions = [node for node in tree.body if isinstance(node, ast.FunctionDef)]
    assert len(functions) >= 7
    stamps = (f"Checked on diffusers {internals.DIFFUSERS_CHECKED}", f"Checked on torch {internals.TORCH_CHECKED}")
    for function in functions:
        docstring = " ".join(ast.get_docstring(function).split())
        assert any(stamp in docstring for stamp in stamps), function.name


def test_pyproject_accepts_the_tested_diffusers_line_only():
    from packaging.requirements import Requirement

    constraints = (ROOT / "constraints.txt").read_text()
    assert f"\ndiffusers=={internals.DIFFUSERS_CHECKED}\n" in constraints
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    diffusers = next(Requirement(text) for text in dependencies if Requirement(text).name == "diffusers")
    major, minor, _ = (int(part) for part in internals.DIFFUSERS_CHECKED.split("."))
    assert internals.DIFFUSERS_CHECKED in diffusers.specifier
    assert f"{major}.{minor + 1}.0" not in diffusers.specifier and f"{major}.{minor - 1}.0" not in diffusers.specifier
    torch_line = next(Requirement(text) for text in dependencies if Requirement(text).name == "torch")
    assert f"{int(internals.TORCH_CHECKED.split('.')[0])}.99" in torch_line.specifier  # torch stays loose


def test_the_scheduler_step_counter():
    from diffusers import EDMEulerScheduler

    step = inspect.getsource(EDMEulerScheduler.step)
    assert "self._init_step_index(timestep)" in step and "self._step_index += 1" in step, _checked(
        "EDMEulerScheduler.step no longer counts its steps as init_step_index and advance_step do",
        internals.DIFFUSERS_CHECKED,
    )
    scheduler = EDMEulerScheduler(sigma_min=0.002, sigma_max=700.0, sigma_data=1.0, prediction_type="v_prediction")
    scheduler.set_timesteps(3)
    assert scheduler.step_index is None
    internals.init_step_index(scheduler, scheduler.timesteps[1])
    assert scheduler.step_index == 1
    internals.advance_step(scheduler)
    assert scheduler.step_index == 2


def test_torch_compile_keeps_the_module_as_orig_mod():
    module = torch.nn.Linear(2, 2)
    compiled = torch.compile(module)  # not run: nothing is compiled until the first call
    assert compiled is not module and internals.uncompiled(compiled) is module, _checked(
        "torch.compile's wrapper no longer holds the module as _orig_mod", internals.TORCH_CHECKED
    )
    assert internals.uncompiled(module) is module


def test_the_unet_forward_is_the_one_the_outer_level_copies():
    from diffusers import UNetSpatioTemporalConditionModel
    from diffusers.models.unets.unet_spatio_temporal_condition import UNetSpatioTemporalConditionOutput

    source = inspect.getsource(UNetSpatioTemporalConditionModel.forward)
    assert hashlib.sha256(source.encode()).hexdigest() == internals.UNET_FORWARD_SHA256, _checked(
        "diffusers' UNetSpatioTemporalConditionModel.forward changed: unet_outer_level copies part of it",
        internals.DIFFUSERS_CHECKED,
    )
    assert "sample" in {field.name for field in UNetSpatioTemporalConditionOutput.__dataclass_fields__.values()}


def test_the_deep_features_are_the_input_of_the_last_up_block():
    from diffusers import UNetSpatioTemporalConditionModel

    source = inspect.getsource(UNetSpatioTemporalConditionModel.forward)
    loop = re.search(r"for i, (\w+) in enumerate\(self\.up_blocks\):\n", source)
    assert loop is not None, _checked("the UNet no longer runs its up blocks in order", internals.DIFFUSERS_CHECKED)
    assert f"sample = {loop.group(1)}(" in source  # each block's output is the next one's input


def test_model_index_names_the_pipeline_class_under_class_name(tmp_path):
    from diffusers import EulerDiscreteScheduler
    from diffusers.pipelines.pipeline_utils import DiffusionPipeline

    saved = json.loads(EulerDiscreteScheduler().to_json_string())
    assert internals.pipeline_class_name(saved) == "EulerDiscreteScheduler"
    assert internals.pipeline_class_name({}) is None
    reads = inspect.getsource(inspect.getmodule(DiffusionPipeline))
    assert '["_class_name"]' in reads, _checked("DiffusionPipeline no longer reads _class_name", "diffusers")


def test_constructor_config_is_what_the_constructor_takes():
    from diffusers import EulerDiscreteScheduler, UNetSpatioTemporalConditionModel

    scheduler = EulerDiscreteScheduler(sigma_max=700.0, use_karras_sigmas=True)
    config = internals.constructor_config(scheduler)
    assert any(name.startswith("_") for name in scheduler.config) and config["sigma_max"] == 700.0
    assert internals.constructor_config(EulerDiscreteScheduler(**config)) == config
    parameters = inspect.signature(UNetSpatioTemporalConditionModel.__init__).parameters
    assert not [name for name in parameters if name.startswith("_")], _checked(
        "a UNet constructor argument starts with an underscore", internals.DIFFUSERS_CHECKED
    )


@pytest.mark.parametrize(
    "name", ["init_step_index", "advance_step", "uncompiled", "unet_outer_level", "pipeline_class_name"]
)
def test_the_private_names_appear_only_in_the_guard(name):
    """No module but the guard touches the internals its functions stand for."""
    private = {
        "init_step_index": "._init_step_index",
        "advance_step": "._step_index",
        "uncompiled": "_orig_mod",
        "unet_outer_level": "UNetSpatioTemporalConditionOutput",
        "pipeline_class_name": '"_class_name"',
    }[name]
    users = [
        path.relative_to(ROOT).as_posix()
        for folder in ("svdbatch", "benchmarks")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if private in path.read_text() and path != INTERNALS
    ]
    assert users == []
