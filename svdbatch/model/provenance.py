"""What software and hardware rendered a video, so two rows with the same seed that differ can be told apart.

The same seed gives different pixels on another GPU model, CUDA build or library version (diffusers #1514); these
values are stamped on every row by the actor that rendered it, and the distinct ones are listed in the job record.
"""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

PROVENANCE_COLUMNS = [
    "gpu_name",
    "cuda_version",
    "driver_version",
    "torch_version",
    "diffusers_version",
    "transformers_version",
]
NVIDIA_DRIVER_FILE = Path("/proc/driver/nvidia/version")


def package_version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def driver_version(source: Path = NVIDIA_DRIVER_FILE) -> str:
    """The NVIDIA kernel driver version (e.g. 550.54.15), read from the file the driver exposes on Linux."""
    try:
        found = re.search(r"Kernel Module\s+(\S+)", source.read_text())
    except OSError:
        return "unknown"
    return found.group(1) if found else "unknown"


def provenance(device: str) -> dict[str, str]:
    """The provenance columns for a pipeline on ``device`` ("cuda" or "cpu"); hardware fields read "cpu" on CPU."""
    libraries = {f"{name}_version": package_version(name) for name in ("torch", "diffusers", "transformers")}
    if device != "cuda":
        return {"gpu_name": "cpu", "cuda_version": "cpu", "driver_version": "cpu", **libraries}
    import torch  # here, not at the top: the driver and the light commands read PROVENANCE_COLUMNS without torch

    return {
        "gpu_name": torch.cuda.get_device_name(torch.cuda.current_device()),
        "cuda_version": torch.version.cuda or "unknown",
        "driver_version": driver_version(),
        **libraries,
    }
