"""The demo's inputs: a few generated images, their Parquet manifest and a job spec using the tiny model."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from PIL import Image, ImageDraw

from svdbatch.errors import JobError
from svdbatch.spec.config import TINY_MODEL

# Set by Ray's job supervisor for a `ray job submit` entrypoint: the job's runtime_env (and metadata) as JSON.
SUBMITTED_JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"
PALETTE = [(230, 57, 70), (29, 53, 87), (69, 123, 157), (244, 162, 97), (42, 157, 143), (233, 196, 106)]


def sample_image(index: int, width: int = 320, height: int = 180) -> Image.Image:
    """A gradient with a few shapes; distinct per index so every video differs."""
    rng = np.random.default_rng(index)
    ramp = np.linspace(0, 1, width)[None, :, None] * np.linspace(0.4, 1, height)[:, None, None]
    base = np.array(PALETTE[index % len(PALETTE)], dtype=np.float64)
    image = Image.fromarray((ramp * base + (1 - ramp) * 30).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(4):
        x, y = int(rng.integers(0, width - 40)), int(rng.integers(0, height - 40))
        size = int(rng.integers(20, 60))
        color = PALETTE[int(rng.integers(0, len(PALETTE)))]
        draw.ellipse([x, y, x + size, y + size], fill=color, outline=(255, 255, 255), width=2)
    return image


def demo_spec() -> dict[str, Any]:
    """Small render sizes that mirror SVD's ratios, so the demo runs in seconds per video on a laptop CPU. Its paths
    are relative: the spec lies beside its manifest and output, and resolves them against its own folder."""
    return {
        "manifest": {"path": "manifest.parquet", "key_column": "key", "image_column": "image"},
        "output": {"url": "output"},
        "model": {"source": TINY_MODEL},
        "render": {"width": 128, "height": 64, "num_frames": 8, "num_inference_steps": 4, "fps": 7},
        "seeds": {"base_seed": 1234, "variants": 2},
        "compute": {"actors": 1, "batch_size": 2, "cpus_per_actor": 1, "torch_threads": 2, "cpus_per_task": 0.5},
    }


def prepare(folder: Path, images: int = 6) -> Path:
    """Write the images, the manifest and ``job.yaml`` under ``folder``; returns the job spec's path."""
    inputs = folder / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    keys, uris = [], []
    for index in range(images):
        path = inputs / f"sample-{index:02d}.png"
        sample_image(index).save(path)
        keys.append(f"sample-{index:02d}")
        uris.append(str(path))
    pq.write_table(pa.table({"key": keys, "image": uris}), folder / "manifest.parquet")
    job = folder / "job.yaml"
    job.write_text(yaml.safe_dump(demo_spec(), sort_keys=False))
    return job


def in_working_dir_copy(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether this process is a `ray job submit` entrypoint running in Ray's temporary copy of its --working-dir
    (runtime_resources/working_dir_files/_ray_pkg_...), which Ray deletes: nothing durable belongs there."""
    try:
        config = json.loads(environ.get(SUBMITTED_JOB_ENV) or "{}")
    except json.JSONDecodeError:
        return False
    return isinstance(config, dict) and bool((config.get("runtime_env") or {}).get("working_dir"))


def check_durable(folder: Path, cwd: Path, environ: Mapping[str, str] = os.environ) -> None:
    """Refuse a demo folder inside Ray's working-dir copy: its output would vanish with the job's files."""
    if in_working_dir_copy(environ) and folder.resolve().is_relative_to(cwd.resolve()):
        raise JobError(
            f"demo: {folder} is inside Ray's temporary copy of the job's working dir, which Ray deletes; pass --dir "
            "with a durable path, e.g. --dir /tmp/svdbatch-demo or a shared volume"
        )
