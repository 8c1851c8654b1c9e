"""CPU throughput: the loop a user writes by hand vs ``svdbatch run``, same tiny model, same items, one run.

    python benchmarks/cpu_throughput.py [--shapes 64x64x8x4:96,256x144x14x2:24]

For each shape (WIDTHxHEIGHTxFRAMESxSTEPS:ITEMS) it prints items/s for both end to end (model load and actor
start included), their ratio, the steady-state ratio (per-item wall time once running: svdbatch from the spacing
of its rows' finish times, the hand loop from its loop alone), and svdbatch's framework overhead at steady state:
1 - (time inside the pipeline call per item) / (wall time per item). Ray is started once before timing, as a
cluster is already up in production.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from svdbatch.demo import sample_image  # noqa: E402
from svdbatch.items.keys import derive_seed  # noqa: E402
from svdbatch.model.loading import ensure_tiny_model, quiet_libraries  # noqa: E402
from svdbatch.ray import driver  # noqa: E402
from svdbatch.spec.load import build_spec  # noqa: E402


def hand_loop(images: list[str], out: Path, width: int, height: int, frames: int, steps: int) -> tuple[float, float]:
    """What a user writes first: for each row load, call diffusers, export, write. Returns (wall, loop) seconds."""
    quiet_libraries()
    from diffusers import StableVideoDiffusionPipeline

    started = time.perf_counter()
    pipe = StableVideoDiffusionPipeline.from_pretrained(str(ensure_tiny_model()), torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    loop_started = time.perf_counter()
    for index, path in enumerate(images):
        image = Image.open(path).convert("RGB").resize((width, height))
        video = pipe(
            image,
            width=width,
            height=height,
            num_frames=frames,
            num_inference_steps=steps,
            decode_chunk_size=frames,
            generator=torch.Generator("cpu").manual_seed(derive_seed(0, str(index), 0)),
            output_type="np",
        ).frames[0]
        # diffusers' export_to_video without the imageio dependency: the same ffmpeg writer underneath.
        writer = imageio_ffmpeg.write_frames(str(out / f"{index}.mp4"), (width, height), fps=7, macro_block_size=1)
        writer.send(None)
        for frame in (video * 255).round().astype(np.uint8):
            writer.send(np.ascontiguousarray(frame))
        writer.close()
    finished = time.perf_counter()
    return finished - started, finished - loop_started


def svdbatch_run(manifest: Path, out: Path, width: int, height: int, frames: int, steps: int, batch: int):
    spec = build_spec(
        {
            "manifest": {"path": str(manifest)},
            "output": {"url": str(out)},
            "render": {"width": width, "height": height, "num_frames": frames, "num_inference_steps": steps},
            "compute": {
                "actors": 1,
                "batch_size": batch,
                "cpus_per_actor": 1,
                "torch_threads": os.cpu_count(),
                "cpus_per_task": 0.5,
            },
            "video": {"preset": "medium"},
        }
    )
    started = time.perf_counter()
    summary = driver.run(spec, progress=False)
    wall = time.perf_counter() - started
    rows = pq.read_table(out / "metadata").to_pylist()
    assert summary.rendered == len(rows), summary.line()
    finished = sorted(row["finished_at"].timestamp() for row in rows)
    steady_wall = (finished[-1] - finished[0]) / max(1, len(finished) - 1)
    inside = sorted(rows, key=lambda row: row["finished_at"])[1:]
    model_time = sum(row["generate_seconds"] for row in inside) / max(1, len(inside))
    return wall, steady_wall, model_time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shapes", default="64x64x8x4:96,256x144x14x2:24")
    parser.add_argument("--batch", type=int, default=2)
    args = parser.parse_args()
    import ray

    ray.init(address="local", include_dashboard=False, logging_level="ERROR")
    ensure_tiny_model()
    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}, svdbatch batch size {args.batch}")
    print(
        f"{'shape':<16}{'items':>6}{'hand items/s':>14}{'svdbatch items/s':>18}{'ratio':>8}"
        f"{'steady ratio':>14}{'overhead':>10}{'hand s/item':>13}{'call s/item':>13}"
    )
    for entry in args.shapes.split(","):
        shape, _, count = entry.partition(":")
        items = int(count or 16)
        width, height, frames, steps = (int(part) for part in shape.split("x"))
        with tempfile.TemporaryDirectory() as folder:
            root = Path(folder)
            paths = []
            for index in range(items):
                path = root / f"{index}.png"
                sample_image(index, 320, 180).save(path)
                paths.append(str(path))
            pq.write_table(pa.table({"key": [str(i) for i in range(items)], "image": paths}), root / "m.parquet")
            (root / "hand").mkdir()
            hand, hand_loop_only = hand_loop(paths, root / "hand", width, height, frames, steps)
            wall, steady, model_time = svdbatch_run(
                root / "m.parquet", root / "svdbatch", width, height, frames, steps, args.batch
            )
        hand_rate, ours = items / hand, items / wall
        hand_steady = hand_loop_only / items
        overhead = max(0.0, 1 - model_time / steady) if steady else 0.0
        print(
            f"{shape:<16}{items:>6}{hand_rate:>14.3f}{ours:>18.3f}{ours / hand_rate:>8.2f}"
            f"{hand_steady / steady:>14.2f}{overhead:>9.1%}{hand_steady:>13.3f}{model_time:>13.3f}"
        )
    ray.shutdown()


if __name__ == "__main__":
    main()
