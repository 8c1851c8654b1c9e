"""Test-only plugins for Ray workers: put this folder on PYTHONPATH and set one of the variables below.

SVDBATCH_TEST_FAULTS=<plan.json>: when a worker imports svdbatch.render.generate, its ``call_pipeline`` is wrapped to
raise the errors a GPU would, as the plan (re-read at every call) says:
  {"max_batch": 1, "max_decode_chunk": 2}      CUDA out of memory above these sizes
  {"always_oom": ["k9"]}                        out of memory for these keys at any size
  {"lose_device": {"k1": 2}, "markers": DIR}    "CUDA error: an illegal memory access", for k1 twice in all processes

SVDBATCH_TEST_GPU_SECONDS=<T>: a simulated GPU. ``call_pipeline`` sleeps T seconds per video (as a GPU busy with one
video keeps the actor waiting) and returns uint8 frames of the job's real size, made from the item's image moving a
few pixels per frame (so encoding costs what a real video costs, unlike noise or a still image); ``to_uint8`` passes
them through, as a GPU hands back uint8 frames converted on the device. Everything else (load, encode, quality,
hash, write, commit) is the real pipeline: benchmarks/ceiling.py measures what the CPU side carries.

Production code knows nothing of this; it is how the actor pool's healing and the render path's ceiling are tested
on CPU.
"""

import importlib.abc
import importlib.util
import json
import os
import sys
import time


def _plan():
    with open(os.environ["SVDBATCH_TEST_FAULTS"]) as handle:
        return json.load(handle)


def _once_more(markers, key, times):
    """True for the first ``times`` calls on ``key`` across every process (one marker file per occurrence)."""
    for index in range(times):
        try:
            os.close(os.open(os.path.join(markers, f"{key}.{index}"), os.O_CREAT | os.O_EXCL))
            return True
        except FileExistsError:
            continue
    return False


def _simulate_gpu(module):
    import numpy as np
    import torch

    seconds = float(os.environ["SVDBATCH_TEST_GPU_SECONDS"])

    def call_pipeline(pipe, images, seeds, params, device, cache=None):
        started = time.perf_counter()
        videos = []
        for image in images:
            still = np.asarray(image.convert("RGB").resize((params["width"], params["height"])))
            frames = [np.roll(still, 4 * index, axis=1) for index in range(params["num_frames"])]
            videos.append(np.stack(frames).transpose(0, 3, 1, 2))  # (F, 3, H, W)
        time.sleep(max(0.0, seconds * len(images) - (time.perf_counter() - started)))
        return torch.from_numpy(np.stack(videos))

    def to_uint8(frames):
        return frames.permute(0, 1, 3, 4, 2).numpy()

    def nonfinite_frames(frames):
        return [0] * frames.shape[0]

    module.call_pipeline = call_pipeline
    module.to_uint8 = to_uint8
    module.nonfinite_frames = nonfinite_frames


def _inject_faults(module):
    import torch

    real = module.call_pipeline

    def call_pipeline(pipe, images, seeds, params, device, cache=None):
        plan = _plan()
        key = params["key"]
        if len(images) > plan.get("max_batch", len(images)) or key in plan.get("always_oom", []):
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate 2.00 GiB (batch {len(images)})")
        if params["decode_chunk_size"] > plan.get("max_decode_chunk", params["decode_chunk_size"]):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB (decode)")
        times = plan.get("lose_device", {}).get(key, 0)
        if times and _once_more(plan["markers"], key, times):
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return real(pipe, images, seeds, params, device, cache)

    module.call_pipeline = call_pipeline


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "svdbatch.render.generate":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        load = spec.loader.exec_module

        def exec_module(module):
            load(module)
            if os.environ.get("SVDBATCH_TEST_GPU_SECONDS"):
                _simulate_gpu(module)
            if os.environ.get("SVDBATCH_TEST_FAULTS"):
                _inject_faults(module)

        spec.loader.exec_module = exec_module
        return spec


if os.environ.get("SVDBATCH_TEST_FAULTS") or os.environ.get("SVDBATCH_TEST_GPU_SECONDS"):
    sys.meta_path.insert(0, _Finder())
