"""model.step_cache: UNet FLOPs per video on the full SVD-XT architecture, and CPU wall time and PSNR, off vs on.

    python benchmarks/step_cache.py [--items 3] [--steps 25] [--models tiny,mid]

1. FLOPs: the SVD-XT UNet (1024x576, 25 frames, 25 steps, CFG) counted on the meta device by svdbatch.model.flops, with
   the cache off and at several schedules; the VAE decode is added for the per-video ratio.
2. Wall time on this CPU, one process, same items: each item is rendered off then on, alternately, so a shared
   machine's load hits both alike; the CPU seconds of this process are printed too, as they suffer less from
   other processes than wall time. "tiny" is the embedded model (2 UNet levels: the skipped part is small);
   "mid" swaps in a random 4-level UNet shaped like SVD-XT's (3 cross-attention levels and a plain one) so that
   the share of work the cache skips is close to the real model's. PSNR compares the frames on vs off: with random
   weights it only shows the size of the change, not its visual quality.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from svdbatch.demo import sample_image  # noqa: E402
from svdbatch.model.flops import unet_step_flops, vae_decode_flops  # noqa: E402
from svdbatch.model.internals import constructor_config  # noqa: E402
from svdbatch.model.loading import build_tiny_pipeline, quiet_libraries  # noqa: E402
from svdbatch.render.generate import call_pipeline, to_uint8  # noqa: E402
from svdbatch.render.quality import psnr  # noqa: E402
from svdbatch.spec.config import StepCacheSpec  # noqa: E402

DEFAULT = StepCacheSpec(enabled=True)
SCHEDULES = [
    StepCacheSpec(enabled=True, interval=2),
    StepCacheSpec(enabled=True, interval=3),
    DEFAULT,
    StepCacheSpec(enabled=True, interval=5),
    StepCacheSpec(enabled=True, interval=4, first_full=4),
]
SHAPES = {"tiny": (64, 64, 8), "mid": (128, 128, 8)}


def unet_flop(full: float, cached: float, steps: int, cache: StepCacheSpec) -> float:
    done_in_full = cache.full_steps(steps)
    return full * done_in_full + cached * (steps - done_in_full)


def _label(cache: StepCacheSpec) -> str:
    if not cache.enabled:
        return "off"
    default = " (default)" if cache == DEFAULT else ""
    return f"interval {cache.interval}, first {cache.first_full}{default}"


def flop_table() -> None:
    width, height, frames, steps = 1024, 576, 25, 25
    full, cached = unet_step_flops(width, height, frames)
    vae = vae_decode_flops(width, height, frames)
    print(f"SVD-XT UNet, {width}x{height}, {frames} frames, {steps} steps, CFG: {full / 1e12:.1f} TFLOP per full step,")
    print(f"{cached / 1e12:.1f} TFLOP per cached step ({cached / full:.0%}); VAE decode {vae / 1e12:.1f} TFLOP")
    print(f"{'schedule':<32}{'full steps':>11}{'UNet PFLOP':>12}{'UNet ratio':>12}{'video ratio':>13}")
    off = unet_flop(full, cached, steps, StepCacheSpec())
    for cache in [StepCacheSpec(), *SCHEDULES]:
        unet = unet_flop(full, cached, steps, cache)
        print(
            f"{_label(cache):<32}{cache.full_steps(steps):>11}{unet / 1e15:>12.2f}{off / unet:>11.2f}x"
            f"{(off + vae) / (unet + vae):>12.2f}x"
        )


def mid_unet(tiny_unet):
    """A random UNet with SVD-XT's four levels, at a width a CPU can run, fitting the tiny pipeline's encoders."""
    from diffusers import UNetSpatioTemporalConditionModel

    torch.manual_seed(0)
    config = constructor_config(tiny_unet)
    config.update(
        down_block_types=("CrossAttnDownBlockSpatioTemporal",) * 3 + ("DownBlockSpatioTemporal",),
        up_block_types=("UpBlockSpatioTemporal",) + ("CrossAttnUpBlockSpatioTemporal",) * 3,
        block_out_channels=(32, 64, 128, 128),
        layers_per_block=2,
        num_attention_heads=(1, 2, 4, 4),
    )
    return UNetSpatioTemporalConditionModel(**config)


def wall_table(models: list[str], items: int, steps: int) -> None:
    threads = torch.get_num_threads()
    print(f"\nCPU, {threads} threads, {items} items each off and on, {steps} steps, schedule {_label(DEFAULT)}")
    print(
        f"{'model':<6}{'shape':>10}{'UNet ratio':>12}{'off s/video':>13}{'on s/video':>12}{'wall ratio':>12}"
        f"{'CPU-s ratio':>13}{'PSNR dB':>9}{'min PSNR':>10}"
    )
    for name in models:
        pipe = build_tiny_pipeline()
        if name == "mid":
            pipe.unet = mid_unet(pipe.unet)
        pipe.set_progress_bar_config(disable=True)
        width, height, frames = SHAPES[name]
        params = dict(
            width=width,
            height=height,
            num_frames=frames,
            num_inference_steps=steps,
            fps=7,
            motion_bucket_id=127,
            noise_aug_strength=0.02,
            min_guidance_scale=1.0,
            max_guidance_scale=3.0,
            decode_chunk_size=frames,
        )
        full, cached = unet_step_flops(width, height, frames, constructor_config(pipe.unet))
        unet_ratio = unet_flop(full, cached, steps, StepCacheSpec()) / unet_flop(full, cached, steps, DEFAULT)
        images = [sample_image(index, width, height) for index in range(items)]
        for cache in (StepCacheSpec(), DEFAULT):  # warm-up
            call_pipeline(pipe, images[:1], [0], params, "cpu", cache)
        seconds = {False: 0.0, True: 0.0}
        cpu_seconds = {False: 0.0, True: 0.0}
        scores = []
        for index, image in enumerate(images):
            frames_by_mode = {}
            for cache in (StepCacheSpec(), DEFAULT):
                started, cpu_started = time.perf_counter(), time.process_time()
                frames_by_mode[cache.enabled] = to_uint8(call_pipeline(pipe, [image], [index], params, "cpu", cache))
                seconds[cache.enabled] += time.perf_counter() - started
                cpu_seconds[cache.enabled] += time.process_time() - cpu_started
            scores.append(psnr(frames_by_mode[True], frames_by_mode[False]))
        off, on = seconds[False] / items, seconds[True] / items
        all_psnr = float(np.mean(scores))
        print(
            f"{name:<6}{f'{width}x{height}x{frames}':>10}{unet_ratio:>11.2f}x{off:>13.2f}{on:>12.2f}{off / on:>11.2f}x"
            f"{cpu_seconds[False] / cpu_seconds[True]:>12.2f}x{all_psnr:>9.1f}{min(scores):>10.1f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=3, help="Videos per model, each rendered off and on.")
    parser.add_argument("--steps", type=int, default=25, help="Denoising steps (SVD-XT: 25).")
    parser.add_argument("--models", default="tiny,mid", help="Comma-separated: tiny, mid.")
    args = parser.parse_args()
    quiet_libraries()
    flop_table()
    wall_table(args.models.split(","), args.items, args.steps)


if __name__ == "__main__":
    main()
