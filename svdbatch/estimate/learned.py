"""Seconds per video that earlier runs (and ``svdbatch tune``) measured, so ``plan`` can use them.

Each run's record (``_job/runs/{run_id}.json``, record.py) keeps ``timings``: for each setting that sets a video's
cost (GPU, weights, dtype, performance options, size, frames, steps, guidance on or off) how many videos rendered,
their generation seconds (model load excluded) and the slowest one. An actor's first call warms the device up (or
compiles the UNet), so the warm figure leaves the slowest video out. Tune's runs write the same records under
``{output}/_tune/``. Plan reads only these small records (record.py's ``read_timings``), never the table's rows. No
torch, no Ray.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from svdbatch.items.metadata import guided

TIMING_KEYS = (
    "gpu_name",
    "model_identity",
    "model_dtype",
    "model_options",
    "width",
    "height",
    "num_frames",
    "num_inference_steps",
    "guidance",
)
# The row columns a timing is read from (``guidance``: metadata.guided, when diffusers runs both halves).
TIMING_COLUMNS = [
    *(name for name in TIMING_KEYS if name != "guidance"),
    "max_guidance_scale",
    "guidance_scale",
    "generate_seconds",
]
TUNE = "_tune"


def timing_key(row: dict[str, Any]) -> tuple:
    return (*(row[name] for name in TIMING_KEYS if name != "guidance"), guided(row))


def add_timing(timings: dict[tuple, list], row: dict[str, Any]) -> None:
    """Count one rendered row: [videos, seconds, slowest] under its setting; a row that carries no generation time
    (made without a generator, as some tests and benchmarks do) is not counted."""
    seconds = row["generate_seconds"]
    if seconds is None:
        return
    entry = timings.setdefault(timing_key(row), [0, 0.0, 0.0])
    entry[0] += 1
    entry[1] += seconds
    entry[2] = max(entry[2], seconds)


def timing_records(timings: dict[tuple, list]) -> list[dict[str, Any]]:
    """The run record's ``timings`` list (JSON-safe)."""
    return [
        {**dict(zip(TIMING_KEYS, key, strict=True)), "videos": videos, "seconds": seconds, "slowest": slowest}
        for key, (videos, seconds, slowest) in timings.items()
    ]


def warm_seconds(seconds: list[float]) -> float:
    """Mean seconds per video leaving out the slowest (an actor's first call warms up), as the records do."""
    if len(seconds) < 2:
        return sum(seconds)
    return (sum(seconds) - max(seconds)) / (len(seconds) - 1)


def _tokens(name: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", name.lower())


def gpu_kind(gpu_name: str, kinds: list[str]) -> str | None:
    """The most specific of ``kinds`` (plan's GPU names: H100, H100-PCIe, A100-80, ...) that names this device
    (``torch.cuda.get_device_name``, e.g. 'NVIDIA H100 80GB HBM3'): each of its words starts a word of the name."""
    words = _tokens(gpu_name)
    matching = [kind for kind in kinds if all(any(w.startswith(t) for w in words) for t in _tokens(kind))]
    return max(matching, key=lambda kind: len(_tokens(kind)), default=None)


def same_gpu(kind: str, gpu_name: str, peaks: dict[str, float]) -> bool:
    """Whether a row's GPU is plan's ``kind``: the same kind, or a variant of it with the same peak (A100-80 for
    A100), never another class of it (an H100 PCIe is not an H100)."""
    found = gpu_kind(gpu_name, sorted({*peaks, kind}))
    if found is None:
        return False
    return found == kind or (_tokens(found)[0] == _tokens(kind)[0] and peaks.get(found) == peaks.get(kind))


@dataclass(frozen=True)
class Measured:
    seconds: float  # warm seconds per video
    videos: int
    gpu_name: str
    sources: str  # who measured it: earlier runs of the output, svdbatch tune, or both


def measured(timings: list[dict[str, Any]], setting: dict[str, Any], gpu: str | None, peaks: dict[str, float]):
    """The warm seconds per video measured at ``setting`` (TIMING_KEYS but gpu_name) on ``gpu`` (a plan GPU kind;
    None: the CPU), pooled over the matching timings; None when nothing matched."""
    matches = [
        timing
        for timing in timings
        if all(timing[name] == setting[name] for name in TIMING_KEYS if name != "gpu_name")
        and (timing["gpu_name"] == "cpu" if gpu is None else same_gpu(gpu, timing["gpu_name"] or "", peaks))
    ]
    if not matches:
        return None
    warm = [timing for timing in matches if timing["videos"] > 1] or matches
    trimmed = sum(timing["seconds"] - (timing["slowest"] if timing["videos"] > 1 else 0) for timing in warm)
    counted = sum(timing["videos"] - (1 if timing["videos"] > 1 else 0) for timing in warm)
    kinds = {timing["tune"] for timing in matches}
    sources = " and ".join(name for tune, name in ((False, "earlier runs"), (True, "svdbatch tune")) if tune in kinds)
    return Measured(trimmed / counted, sum(timing["videos"] for timing in matches), matches[-1]["gpu_name"], sources)
