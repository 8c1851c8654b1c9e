"""The generation stage: one pipeline per instance, items in, uint8 frames out.

SVD items that share every call parameter go through one pipeline call with one ``torch.Generator`` per item, so a
video's pixels depend only on its own seed and parameters, never on which items it was batched with. Wan and LTX
items go one per call (the family module's ``call``), with their own generator. A failing batch is retried item by
item so one bad item cannot take its neighbours down with it; out of memory and fatal CUDA errors follow the policy
in faults.py.
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

from svdbatch.items.metadata import OK, RENDER_COLUMNS, fail, to_rows, to_table
from svdbatch.model.cache import copy_record, resolve_unet
from svdbatch.model.families import FAMILIES
from svdbatch.model.identity import ModelError
from svdbatch.model.loading import applied_options, dtype_name, load_pipeline, pick_dtype, resolve_source
from svdbatch.model.provenance import provenance
from svdbatch.model.step_cache import cached_steps
from svdbatch.render import faults
from svdbatch.spec.config import JobSpec, StepCacheSpec
from svdbatch.spec.render import PROMPTED_PARAMS

# Items share a pipeline call only when every call argument matches; "fit" was applied to the image already.
CALL_PARAMS = tuple(name for name in [*RENDER_COLUMNS, *PROMPTED_PARAMS] if name != "fit")


class DeviceLost(RuntimeError):
    """The CUDA context is poisoned: this process must not run another item."""


def pick_device(requested: str) -> str:
    if requested == "cpu":
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    if requested == "cuda":
        raise ModelError("model.device is 'cuda' but this worker sees no CUDA device")
    return "cpu"


def call_pipeline(
    pipe,
    images: list[Image.Image],
    seeds: list[int],
    params: dict[str, Any],
    device: str,
    cache: StepCacheSpec | None = None,
):
    """The one SVD call: exactly what a user would write with plain diffusers. Returns (n, F, 3, H, W) floats.

    A stochastic sampler (``model.scheduler``) draws its noise from the same per-item generators."""
    from svdbatch.model.sampler import item_noise

    generators = [torch.Generator(device).manual_seed(seed) for seed in seeds]
    with (
        torch.inference_mode(),
        cached_steps(pipe.unet, cache or StepCacheSpec()),
        item_noise(pipe.scheduler, generators),
    ):
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
    return frames


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """(n, F, 3, H, W) floats in [0, 1] -> (n, F, H, W, 3) uint8, rounded like diffusers' own numpy_to_pil."""
    return (frames * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 1, 3, 4, 2).cpu().numpy()


def nonfinite_frames(frames: torch.Tensor) -> list[int]:
    """Frames with any NaN or inf, per video: counted on the floats, as the uint8 cast turns them into black."""
    return (~torch.isfinite(frames)).flatten(2).any(dim=2).sum(dim=1).tolist()


class VideoGenerator:
    """Owns one pipeline for its lifetime; called with a batch of work rows (a pyarrow Table)."""

    def __init__(self, spec: JobSpec):
        self.spec = spec
        self.device = pick_device(self.spec.model.device)
        if self.device == "cpu":
            threads = self.spec.compute.torch_threads or max(1, round(self.spec.compute.cpus_per_actor))
            torch.set_num_threads(threads)
        self.dtype = dtype_name(pick_dtype(self.spec.model, self.device))
        path = resolve_source(self.spec.model, self.spec.storage_options)
        self.model_copy = copy_record(path)
        unet = resolve_unet(self.spec.model, self.spec.storage_options)
        self.pipe = load_pipeline(self.spec.model, self.device, path, unet)
        self.family = FAMILIES[type(self.pipe).__name__]
        if self.spec.model.family not in ("auto", self.family.NAME):
            raise ModelError(
                f"model.family {self.spec.model.family}: model.source {self.spec.model.source} is "
                f"{type(self.pipe).__name__} ({self.family.NAME})"
            )
        # Where this pipeline runs, stamped on every row; the Ray adapter adds the node and GPU ids.
        self.placement: dict[str, Any] = {
            "device": self.device,
            "model_dtype": self.dtype,
            "model_options": json.dumps(applied_options(self.spec.model, self.device), sort_keys=True),
            **provenance(self.device),
        }

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = to_rows(batch)
        groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
        for row in rows:
            row.update(self.placement)
            if row["status"] == OK and not self._misfit(row):
                groups[tuple(row[name] for name in CALL_PARAMS)].append(row)
        size = self.spec.compute.batch_size if self.family.BATCHED else 1
        try:
            for group in groups.values():
                for start in range(0, len(group), size):
                    self._render(group[start : start + size], group[0]["decode_chunk_size"])
        except DeviceLost as lost:
            self.device_lost(lost, [row for row in rows if row["status"] == OK and row.get("frames") is None])
        return to_table(rows)

    def _misfit(self, row: dict[str, Any]) -> bool:
        """Fail a row this pipeline cannot render as planned: expanded for another family (the driver could not
        read the model's pipeline class), or at a size the loaded model cannot take."""
        item = f"generate {row['key']!r} v{row['variant']}"
        if row["model_family"] != self.family.NAME:
            pipeline = type(self.pipe).__name__
            fail(row, f"{item}: planned as {row['model_family']}, but model.source is {pipeline}: set model.family")
        else:
            problems = self.family.pipe_problems(self.pipe, row)
            if problems:
                fail(row, f"{item}: {'; '.join(problems)}")
        return row["status"] != OK

    def device_lost(self, lost: DeviceLost, unrendered: list[dict[str, Any]]) -> None:
        """Plain use has no one to restart this process: the error ends the call. The Ray adapter overrides this."""
        raise lost

    def _render(self, items: list[dict[str, Any]], chunk: int) -> None:
        try:
            self._call(items, chunk)
        except Exception as error:  # noqa: BLE001 - a failing call must not lose its items
            if faults.is_device_lost(error):
                raise DeviceLost(f"{type(error).__name__}: {error}") from error
            if faults.is_out_of_memory(error):
                self._shrink(items, chunk, error)
            elif len(items) == 1:
                item = items[0]
                fail(item, f"generate {item['key']!r} v{item['variant']}: {type(error).__name__}: {error}")
            else:
                for item in items:
                    self._render([item], chunk)

    def _shrink(self, items: list[dict[str, Any]], chunk: int, error: Exception) -> None:
        """Out of memory: retry in two halves, then with fewer frames decoded at once, then give up on the item."""
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()
        retry = faults.after_out_of_memory(len(items), chunk or 1, items[0]["num_frames"])  # Wan, LTX: no chunk
        if retry is None:
            item = items[0]
            at = f"batch 1, decode_chunk_size {chunk}" if chunk else "batch 1"
            cause = f"out of memory at {at}: {type(error).__name__}: {error}"
            fail(item, f"generate {item['key']!r} v{item['variant']}: {cause}")
        elif retry.split:
            half = len(items) // 2
            self._render(items[:half], chunk)
            self._render(items[half:], chunk)
        else:
            self._render(items, retry.decode_chunk_size)

    def _call(self, items: list[dict[str, Any]], chunk: int) -> None:
        first = items[0]
        images = [
            Image.fromarray(np.frombuffer(item["image"], dtype=np.uint8).reshape(item["height"], item["width"], 3))
            for item in items
        ]
        on_cuda = self.device.startswith("cuda")
        if on_cuda:
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        params = {**first, "decode_chunk_size": chunk}
        seeds = [item["seed"] for item in items]
        if self.family.BATCHED:
            floats = call_pipeline(self.pipe, images, seeds, params, self.device, self.spec.model.step_cache)
        else:
            floats = self.family.call(self.pipe, images[0], params, seeds[0], self.device).unsqueeze(0)
        frames, nonfinite = to_uint8(floats), nonfinite_frames(floats)
        elapsed = time.perf_counter() - started
        peak = torch.cuda.max_memory_allocated() if on_cuda else None
        for item, video, bad in zip(items, frames, nonfinite, strict=True):
            # decode_chunk_size and batch_items say what was actually used, smaller after out of memory.
            item.update(
                frames=video.tobytes(),
                nonfinite_frames=bad,
                generate_seconds=elapsed / len(items),
                peak_gpu_bytes=peak,
                batch_items=len(items),
                decode_chunk_size=chunk,
            )
