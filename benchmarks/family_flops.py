"""FLOPs of one video for the full-size Wan and LTX image-to-video models, counted on the meta device.

    python benchmarks/family_flops.py

Each configuration (the family modules' FULL_SIZE: Wan 2.1 I2V 14B at 480x832x81, Wan 2.2 TI2V 5B at 704x1280x121,
LTX-Video 2B at 512x704x121, 50 steps) is built from diffusers' real classes without memory; one transformer call is
counted with one branch, so classifier-free guidance doubles it, and the VAE decode is added once. The floor is the
time at 800 TFLOP/s (an H100's real bf16 matmul rate); the text and image encoders are left out (one call a video).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from svdbatch.model import ltx, wan  # noqa: E402

MATMUL_RATE = 800e12


def main() -> None:
    print(f"{'model':<18}{'size':>14}{'steps':>6}{'CFG':>5}{'step TFLOP':>12}{'decode TFLOP':>14}{'PFLOP/video':>13}"
          f"{'floor s':>9}")
    for family in (wan, ltx):
        for name, config in family.FULL_SIZE.items():
            started = time.perf_counter()
            size = (config["width"], config["height"], config["num_frames"])
            counted = family.video_flops(config["transformer"], config["vae"], *size, config["steps"], 1.0)
            for branches in (2, 1):
                step = counted["transformer_step"] * branches
                total = step * config["steps"] + counted["vae_decode"]
                shape = f"{size[1]}x{size[0]}x{size[2]}"
                print(f"{name:<18}{shape:>14}{config['steps']:>6}{'on' if branches == 2 else 'off':>5}"
                      f"{step / 1e12:>12.1f}{counted['vae_decode'] / 1e12:>14.1f}{total / 1e15:>13.2f}"
                      f"{total / MATMUL_RATE:>9.0f}")
            print(f"  (counted in {time.perf_counter() - started:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
