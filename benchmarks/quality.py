"""Cost of the per-video quality signals in the writer stage, at SVD-XT's output size, against the MP4 encode.

    python benchmarks/quality.py [--size 1024x576x25] [--repeats 3]

Prints milliseconds per video for ``quality.measure`` and for the MP4 encode the writer does anyway (default video
settings), and the measure's share of the two.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from svdbatch.demo import sample_image  # noqa: E402
from svdbatch.render import quality  # noqa: E402
from svdbatch.render.video import encode_mp4  # noqa: E402
from svdbatch.spec.config import VideoSpec  # noqa: E402


def best_ms(action, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return min(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="1024x576x25", help="WIDTHxHEIGHTxFRAMES")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    width, height, count = (int(part) for part in args.size.split("x"))
    image = np.asarray(sample_image(0, width, height))
    frames = np.stack([np.roll(image, 4 * index, axis=1) for index in range(count)])
    measure = best_ms(lambda: quality.measure(frames, image, 0), args.repeats)
    encode = best_ms(lambda: encode_mp4(frames, 7, VideoSpec()), args.repeats)
    print(f"{width}x{height}, {count} frames: quality.measure {measure:.0f} ms/video, MP4 encode {encode:.0f} ms/video")
    print(f"measure share of writer CPU time (measure + encode): {measure / (measure + encode):.1%}")


if __name__ == "__main__":
    main()
