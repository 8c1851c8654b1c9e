"""One-GPU throughput: bare diffusers vs svdbatch's generation path, on the full-size SVD-XT architecture.

    python benchmarks/gpu.py                 # CUDA: SVD-XT shapes, random fp16 weights, 1024x576, 25 frames, 25 steps
    python benchmarks/gpu.py --reduced       # anywhere: the tiny model at 64x64, 8 frames, 4 steps (CI runs this)

No weights are downloaded: the architecture is built by ``svdbatch.model.loading.build_svd_xt`` from the configs of
stabilityai/stable-video-diffusion-img2vid-xt with random weights, which cost the same FLOPs as trained ones.
"Bare" is what the diffusers docs show: one image per call, default options. "svdbatch" is the same call through
``svdbatch.render.generate.call_pipeline`` with the job spec's options applied by ``svdbatch.model.loading.configure``
(channels_last, TF32, torch.compile off/on), the step cache off/on (model.step_cache at its default schedule) and
batches of 1, 2 or 4 items with one generator each. With --reduced it runs on a CPU (the tests do), where compile
and the GPU columns say little; the full table needs a CUDA GPU.
Printed per row: seconds per video, videos per hour, peak GPU memory, busy fraction (time inside pipeline calls
over wall time) and the ratio to bare diffusers.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from svdbatch.model.loading import build_svd_xt, build_tiny_pipeline, configure, quiet_libraries  # noqa: E402
from svdbatch.render.generate import call_pipeline, to_uint8  # noqa: E402
from svdbatch.spec.config import ModelSpec, StepCacheSpec  # noqa: E402

FULL = dict(width=1024, height=576, num_frames=25, num_inference_steps=25, decode_chunk_size=5)
REDUCED = dict(width=64, height=64, num_frames=8, num_inference_steps=4, decode_chunk_size=8)


def _params(shape: dict) -> dict:
    return dict(
        shape, fps=6, motion_bucket_id=127, noise_aug_strength=0.02, min_guidance_scale=1.0, max_guidance_scale=3.0
    )


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def bare_call(pipe, image, shape: dict, device: str, seed: int) -> None:
    """The documented diffusers call: one image, default options (benchmarks/device_check.py times it too)."""
    pipe(
        image,
        width=shape["width"],
        height=shape["height"],
        num_frames=shape["num_frames"],
        num_inference_steps=shape["num_inference_steps"],
        decode_chunk_size=shape["decode_chunk_size"],
        generator=torch.Generator(device).manual_seed(seed),
        output_type="np",
    )
    _sync(device)


def bare(pipe, images, shape, device: str) -> tuple[float, float]:
    """The documented diffusers loop: one video per call."""
    wall_started = time.perf_counter()
    busy = 0.0
    for index, image in enumerate(images):
        started = time.perf_counter()
        bare_call(pipe, image, shape, device, index)
        busy += time.perf_counter() - started
    return time.perf_counter() - wall_started, busy


def ours(pipe, images, shape, device: str, batch: int, cache: StepCacheSpec) -> tuple[float, float]:
    wall_started = time.perf_counter()
    busy = 0.0
    for start in range(0, len(images), batch):
        chunk = images[start : start + batch]
        started = time.perf_counter()
        to_uint8(call_pipeline(pipe, chunk, list(range(start, start + len(chunk))), _params(shape), device, cache))
        _sync(device)
        busy += time.perf_counter() - started
    return time.perf_counter() - wall_started, busy


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reduced", action="store_true", help="Tiny model and shapes; runs on a CPU.")
    parser.add_argument("--items", type=int, default=8, help="Videos per configuration (after one warm-up call).")
    parser.add_argument("--batches", default="1,2,4")
    parser.add_argument("--compile", choices=["both", "off", "on"], default="both")
    parser.add_argument("--cache", choices=["both", "off", "on"], default="both", help="model.step_cache")
    args = parser.parse_args()
    quiet_libraries()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    reduced = args.reduced or device == "cpu"
    shape = REDUCED if reduced else FULL
    dtype_name = "fp32" if device == "cpu" else "fp16"
    dtype = torch.float32 if device == "cpu" else torch.float16
    size = f"{shape['width']}x{shape['height']}, {shape['num_frames']} frames, {shape['num_inference_steps']} steps"
    print(f"device: {torch.cuda.get_device_name() if device == 'cuda' else 'cpu'}; {size}; {dtype_name}")
    rng = np.random.default_rng(0)
    images = [
        Image.fromarray(rng.integers(0, 255, (shape["height"], shape["width"], 3), dtype=np.uint8))
        for _ in range(args.items)
    ]

    def fresh_pipe():
        return build_tiny_pipeline().to(dtype).to(device) if reduced else build_svd_xt(device, dtype)

    rows = []
    pipe = fresh_pipe()
    pipe.set_progress_bar_config(disable=True)
    bare(pipe, images[:1], shape, device)  # warm-up
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    wall, busy = bare(pipe, images, shape, device)
    rows.append(("bare diffusers", "-", "-", 1, wall, busy, _peak(device)))
    modes = {"both": [False, True], "off": [False], "on": [True]}
    for compiled in modes[args.compile]:
        pipe = configure(fresh_pipe(), ModelSpec(dtype=dtype_name, compile_unet=compiled), device)
        for cached in modes[args.cache]:
            cache = StepCacheSpec(enabled=cached)
            for batch in (int(value) for value in args.batches.split(",")):
                ours(pipe, images[:batch], shape, device, batch, cache)  # warm-up (and compilation) for this shape
                if device == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                wall, busy = ours(pipe, images, shape, device, batch, cache)
                switches = ("on" if compiled else "off", "on" if cached else "off")
                rows.append(("svdbatch", *switches, batch, wall, busy, _peak(device)))
    baseline = rows[0][4] / args.items
    print(
        f"{'path':<16}{'compile':>8}{'cache':>6}{'batch':>6}{'s/video':>10}{'videos/h':>10}{'peak GiB':>10}"
        f"{'busy':>7}{'vs bare':>9}"
    )
    for name, compiled, cached, batch, wall, busy, peak in rows:
        per_video = wall / args.items
        print(
            f"{name:<16}{compiled:>8}{cached:>6}{batch:>6}{per_video:>10.2f}{3600 / per_video:>10.1f}{peak:>10.1f}"
            f"{busy / wall:>7.0%}{baseline / per_video:>8.2f}x"
        )


def _peak(device: str) -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")


if __name__ == "__main__":
    main()
