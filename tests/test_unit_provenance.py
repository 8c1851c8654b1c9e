"""Provenance columns: honest "cpu" on the CPU, real library versions, the NVIDIA driver read from its file."""

from __future__ import annotations

from importlib.metadata import version

import diffusers
import torch
import transformers

from svdbatch.model.provenance import PROVENANCE_COLUMNS, driver_version, provenance


def test_cpu_provenance_says_cpu_and_names_the_library_versions():
    found = provenance("cpu")
    assert list(found) == PROVENANCE_COLUMNS
    assert found["gpu_name"] == found["cuda_version"] == found["driver_version"] == "cpu"
    # The installed distribution's version: PyPI's CUDA wheels say 2.13.0 there and 2.13.0+cu130 in torch.__version__.
    assert found["torch_version"] == version("torch")
    assert found["torch_version"].split("+")[0] == torch.__version__.split("+")[0]  # the torch this process runs
    assert (found["diffusers_version"], found["transformers_version"]) == (
        diffusers.__version__,
        transformers.__version__,
    )


def test_driver_version_is_parsed_from_the_driver_file_or_unknown(tmp_path):
    source = tmp_path / "version"
    source.write_text(
        "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  Tue Mar  5 22:23:56 UTC 2024\n"
        "GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n"
    )
    assert driver_version(source) == "550.54.15"
    assert driver_version(tmp_path / "absent") == "unknown"
