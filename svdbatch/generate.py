"""The generation stage: one pipeline per instance, items in, uint8 frames out.

Items that share every call parameter go through one pipeline call with one ``torch.Generator`` per item, so a
video's pixels depend only on its own seed and parameters, never on which items it was batched with. A failing
batch is retried item by item so one bad item cannot take its neighbours down with it.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from PIL import Image

from svdbatch.config import JobSpec
from svdbatch.metadata import OK, RENDER_COLUMNS, fail, to_rows, to_table
from svdbatch.model import (
    ModelError,
    applied_options,
    copy_record,
    dtype_name,
    load_pipeline,
    pick_dtype,
    resolve_source,
)

# Items share a pipeline call only when every call argument matches; "fit" was applied to the image already.
CALL_PARAMS = tuple(name for name in RENDER_COLUMNS if name != "fit")


def pick_device(requested: str) -> str:
    if requested == "cpu":
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    if requested == "cuda":
        raise ModelError("model.device is 'cuda' but this worker sees no CUDA device")
    return "cpu"


def call_pipeline(pipe, images: list[Image.Image], seeds: list[int], params: dict[str, Any], device: str):
    """The one SVD call: exactly what a user would write with plain diffusers. Returns (n, F, H, W, 3) uint8."""
    generators = [torch.Generator(device).manual_seed(seed) for seed in seeds]
    with torch.inference_mode():
        frames = pipe(
            images,
            height=params["height"],
            width=params["width"],
            num_frames=params["num_frames"],
            num_inference_steps=params["num_inference_steps"],
            fps=params["fps"],
            motion_bucket_id=params["motion_bucket_id"],
            noise_aug_strength=params["noise_aug_strength"],
            min_guidance_scale=params["min_guidance_scale"],
            max_guidance_scale=params["max_guidance_scale"],
            decode_chunk_size=params["decode_chunk_size"],
            generator=generators,
            output_type="pt",
        ).frames
    # (n, F, 3, H, W) floats in [0, 1] -> (n, F, H, W, 3) uint8, rounded like diffusers' own numpy_to_pil.
    return (frames * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 1, 3, 4, 2).cpu().numpy()


class VideoGenerator:
    """Owns one pipeline for its lifetime; called with a batch of work rows (a pyarrow Table)."""

    def __init__(self, spec: dict[str, Any]):
        self.spec = JobSpec.model_validate(spec)
        self.device = pick_device(self.spec.model.device)
        if self.device == "cpu":
            threads = self.spec.compute.torch_threads or max(1, round(self.spec.compute.cpus_per_actor))
            torch.set_num_threads(threads)
        self.dtype = dtype_name(pick_dtype(self.spec.model, self.device))
        path = resolve_source(self.spec.model, self.spec.storage_options)
        self.model_copy = copy_record(path)
        self.pipe = load_pipeline(self.spec.model, self.device, path)
        # Where this pipeline runs, stamped on every row; the Ray adapter adds the node and GPU ids.
        self.placement: dict[str, Any] = {
            "device": self.device,
            "model_dtype": self.dtype,
            "model_options": json.dumps(applied_options(self.spec.model, self.device), sort_keys=True),
        }

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = to_rows(batch)
        groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
        for row in rows:
            row.update(self.placement)
            if row["status"] == OK:
                groups[tuple(row[name] for name in CALL_PARAMS)].append(row)
        size = self.spec.compute.batch_size
        for group in groups.values():
            for start in range(0, len(group), size):
                self._render(group[start : start + size])
        return to_table(rows)

    def _render(self, items: list[dict[str, Any]]) -> None:
        try:
            self._call(items)
        except Exception as error:  # noqa: BLE001 - a failing call must not lose its items
            if len(items) == 1:
                item = items[0]
                fail(item, f"generate {item['key']!r} v{item['variant']}: {type(error).__name__}: {error}")
                return
            for item in items:
                self._render([item])

    def _call(self, items: list[dict[str, Any]]) -> None:
        first = items[0]
        images = [
            Image.fromarray(np.frombuffer(item["image"], dtype=np.uint8).reshape(item["height"], item["width"], 3))
            for item in items
        ]
        started = time.perf_counter()
        frames = call_pipeline(self.pipe, images, [item["seed"] for item in items], first, self.device)
        elapsed = time.perf_counter() - started
        for item, video in zip(items, frames, strict=True):
            item.update(
                frames=video.tobytes(),
                image=None,
                generate_seconds=elapsed / len(items),
                batch_items=len(items),
            )
