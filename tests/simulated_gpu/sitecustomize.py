"""Test-only simulated GPU for Ray workers: put this folder on PYTHONPATH and SVDBATCH_TEST_GPU_SECONDS=<T>.

When a worker imports svdbatch.generate, its ``call_pipeline`` is replaced: it sleeps T seconds per video (as a
GPU busy with one video would keep the actor waiting) and returns uint8 frames of the job's real size, made from
the item's image moving a few pixels per frame (so encoding costs what a real video costs, unlike noise or a still
image). ``to_uint8`` passes them through, as a GPU would hand back uint8 frames after converting them on the device.
Everything else (load, encode, quality, hash, write, commit) is the real pipeline: benchmarks/ceiling.py measures
how many videos per second the CPU side can carry for N GPUs of T seconds each.
"""

import importlib.abc
import importlib.util
import os
import sys
import time


def _inject(module):
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


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "svdbatch.generate":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        load = spec.loader.exec_module

        def exec_module(module):
            load(module)
            _inject(module)

        spec.loader.exec_module = exec_module
        return spec


if os.environ.get("SVDBATCH_TEST_GPU_SECONDS"):
    sys.meta_path.insert(0, _Finder())
