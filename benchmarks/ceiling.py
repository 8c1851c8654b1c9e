"""The render path's CPU ceiling: how many videos per second the real pipeline carries for N GPUs of T s per video.

    python benchmarks/ceiling.py [--size 1024x576x25] [--gpus 1,2,4] [--gpu-seconds 2,0.5] [--items 24]
                                 [--memory-items 1000,100000] [--window 90]

The generation stage is replaced by a simulated GPU (the test plugin in tests/faults with SVDBATCH_TEST_GPU_SECONDS:
it sleeps T s per video and returns frames of the job's real size); everything else is the real pipeline, run as the
user runs it: ``svdbatch run`` in a fresh process that starts its own local Ray with N logical GPUs
(RAY_OVERRIDE_RESOURCES). Printed:

1. CPU-seconds per video by stage (load, quality, encode, hash, write, commit), measured in this process on one
   video of the job's size, and from them the CPUs a node needs per GPU for a 25-step and a 4-step SVD-XT model;
2. per (N, T): videos/s (from the written videos' times), time to the first committed row, driver peak RSS, and
   the object store's peak (pages allocated in its shared-memory file: a high-water mark);
3. the same peaks for a job of each --memory-items size, stopped after --window seconds, and the peak RSS of the
   worker that ran the feed task: the render path's memory must not grow with the job;
4. the embedded tiny model on --tiny-items items with default compute settings: when the first video is written and
   committed, and the written count every 15 s (videos are committed while generation goes on).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "tests" / "faults"  # its simulated GPU
SVDBATCH = Path(sys.executable).parent / "svdbatch"
# Published SVD-XT seconds per video (1024x576, 25 frames) for the sizing rule: 25 steps with guidance on an A100
# (the public demo's figure) and the FLOP floor of 4 guidance-free steps on an H100 (docs/operations.md, "Sizing").
TIMELINE_S = 15.0
MODELS = {"SVD-XT, 25 steps, A100": 60.0, "SVD-XT, 25 steps, H100 floor": 5.0, "SVD-XT, 4 steps, H100 floor": 0.6}


def _cpu() -> float:
    """CPU seconds of this process and of the children it waited for (ffmpeg)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def _timed(action):
    began = _cpu()
    result = action()
    return result, _cpu() - began


def stage_costs(width: int, height: int, frames: int, folder: Path) -> dict[str, float]:
    """CPU-seconds of each CPU stage for one video of this size, run as the pipeline runs them."""
    from PIL import Image

    from svdbatch import storage
    from svdbatch.demo import sample_image
    from svdbatch.render import quality
    from svdbatch.render.images import load_image
    from svdbatch.render.video import encode_mp4
    from svdbatch.spec.config import VideoSpec
    from svdbatch.store.committer import Committer

    source = folder / "source.jpg"
    sample_image(0, 1920, 1080).save(source, quality=92)
    data, load = _timed(lambda: storage.read_bytes(str(source)))
    image, fit = _timed(lambda: load_image(data, width, height, "crop", 64_000_000))
    still = np.asarray(Image.fromarray(np.frombuffer(image.tobytes(), np.uint8).reshape(height, width, 3)))
    video = np.stack([np.roll(still, 4 * index, axis=1) for index in range(frames)])
    _, measure = _timed(lambda: quality.measure(video, still, 0))
    mp4, encode = _timed(lambda: encode_mp4(video, 7, VideoSpec()))
    _, digest = _timed(lambda: hashlib.sha256(mp4).hexdigest())
    _, write = _timed(lambda: storage.write_bytes(str(folder / "video.mp4"), mp4))
    committer = Committer(str(folder / "out"), "bench", {}, 1.0)
    rows = _metadata_rows(1000)
    _, commit = _timed(lambda: (committer._pending.append(rows), committer.flush()))
    return {
        "load": load + fit,
        "quality": measure,
        "encode": encode,
        "hash": digest,
        "write": write,
        "commit": commit / rows.num_rows,
    }


def photo_like(seed: int, width: int, height: int):
    """Noise with a photograph's spectrum (detail at every scale, weaker the finer): an encoder spends on it
    what it spends on a photo, where flat synthetic shapes would make encoding look several times cheaper."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    image = np.zeros((height, width, 3))
    for octave in range(1, 9):
        cells = rng.random((max(2, height >> (8 - octave)), max(2, width >> (8 - octave)), 3))
        layer = Image.fromarray((cells * 255).astype(np.uint8)).resize((width, height), Image.BICUBIC)
        image += np.asarray(layer, dtype=np.float64) / 1.5**octave
    return Image.fromarray(np.clip(image / image.max() * 255, 0, 255).astype(np.uint8))


def _metadata_rows(count: int) -> pa.Table:
    from svdbatch.items.metadata import METADATA_SCHEMA

    columns = {field.name: pa.nulls(count, field.type) for field in METADATA_SCHEMA}
    columns.update(key=pa.array([f"k{index}" for index in range(count)]), status=pa.array(["ok"] * count))
    return pa.table(columns, schema=METADATA_SCHEMA)


def _job(folder: Path, items: int, width: int, height: int, frames: int, gpus: int) -> Path:
    """A manifest of ``items`` rows over a few real images, and a spec that renders them at the real size."""
    images = []
    for index in range(8):
        path = folder / f"image-{index}.jpg"
        photo_like(index, width, height).save(path, quality=92)
        images.append(str(path))
    keys = [f"item-{index:07d}" for index in range(items)]
    uris = [images[index % len(images)] for index in range(items)]
    pq.write_table(pa.table({"key": keys, "image": uris}), folder / "manifest.parquet")
    spec = {
        "manifest": {"path": str(folder / "manifest.parquet"), "key_column": "key", "image_column": "image"},
        "output": {"url": str(folder / "out")},
        "render": {"width": width, "height": height, "num_frames": frames, "num_inference_steps": 25, "fps": 7},
        # One CPU for all actors (and one for the task that cuts blocks): logical CPUs here; the cores are shared.
        "compute": {"actors": gpus, "batch_size": 1, "cpus_per_actor": round(1 / gpus, 3), "cpus_per_task": 0.25},
    }
    (folder / "job.yaml").write_text(yaml.safe_dump(spec))
    return folder / "job.yaml"


def _peak_rss_mib(pid: int) -> float | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    return next((int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("VmHWM:")), None)


def _object_store_mib(driver: psutil.Process) -> float:
    """Pages allocated in the object store's shared-memory file (open in the driver's raylet): plasma never gives
    them back while it runs, so this is the object store's high-water mark."""
    for process in driver.children(recursive=True):
        try:
            if process.name() != "raylet":
                continue
            for fd in os.listdir(f"/proc/{process.pid}/fd"):
                if "plasma" in os.readlink(f"/proc/{process.pid}/fd/{fd}"):
                    return os.stat(f"/proc/{process.pid}/fd/{fd}").st_blocks * 512 / 2**20
        except (OSError, psutil.Error):
            continue
    return 0.0


def _feed_rss_mib(driver: psutil.Process) -> float:
    """The largest peak RSS of the workers that ran the feed task (read, expand, cut: Ray titles a worker process
    by its task), where a job's manifest rows and the items expanded ahead of the cut live."""
    peaks = [0.0]
    for process in driver.children(recursive=True):
        try:
            if "ReadFiles" in " ".join(process.cmdline()):
                peaks.append(_peak_rss_mib(process.pid) or 0.0)
        except psutil.Error:
            continue
    return max(peaks)


def run_job(job: Path, gpus: int, gpu_seconds: float | None, window: float | None = None) -> dict:
    """``svdbatch run`` in a fresh process, sampled every 0.2 s; stopped by SIGINT after ``window`` seconds.

    ``gpu_seconds`` None: the job's own model generates (no simulated GPU, no logical GPUs)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("RAY_")}
    if gpu_seconds is not None:
        env.update(
            RAY_OVERRIDE_RESOURCES=json.dumps({"GPU": gpus}),
            SVDBATCH_TEST_GPU_SECONDS=str(gpu_seconds),
            PYTHONPATH=os.pathsep.join([str(PLUGIN), env.get("PYTHONPATH", "")]),
        )
    output = Path(yaml.safe_load(job.read_text())["output"]["url"])
    started, wall_started = time.monotonic(), time.time()
    process = subprocess.Popen(
        [str(SVDBATCH), "run", str(job), "--quiet"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    driver = psutil.Process(process.pid)
    first_commit = None
    peak_rss = peak_store = peak_feed = 0.0
    written: list[tuple[float, int]] = []  # (seconds, videos written) every TIMELINE_S
    while process.poll() is None:
        now = time.monotonic() - started
        peak_rss = max(peak_rss, _peak_rss_mib(process.pid) or 0.0)
        peak_store = max(peak_store, _object_store_mib(driver))
        peak_feed = max(peak_feed, _feed_rss_mib(driver))
        if first_commit is None and (output / "_commits").is_dir() and any((output / "_commits").iterdir()):
            first_commit = now
        if now >= len(written) * TIMELINE_S:
            written.append((now, len(os.listdir(output / "videos")) if (output / "videos").is_dir() else 0))
        if window and now > window:
            process.send_signal(signal.SIGINT)
            window = None
        time.sleep(0.2)
    out = process.stdout.read().decode(errors="replace")
    if process.returncode not in (0, 130):
        sys.exit(f"svdbatch run failed ({process.returncode}):\n{out[-3000:]}")
    videos = output / "videos"
    times = sorted(entry.stat().st_mtime for entry in os.scandir(videos)) if videos.is_dir() else []
    return {
        "videos": len(times),
        "videos_per_s": (len(times) - 1) / (times[-1] - times[0]) if len(times) > 2 else float("nan"),
        "first_video_s": times[0] - wall_started if times else float("nan"),
        "first_commit_s": first_commit or float("nan"),
        "driver_mib": peak_rss,
        "store_mib": peak_store,
        "feed_mib": peak_feed,
        "written": written,
    }


def _numbers(text: str, kind) -> list:
    return [kind(part) for part in text.split(",")]


def stages(width: int, height: int, frames: int) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        costs = stage_costs(width, height, frames, Path(scratch))
    total = sum(costs.values())
    print(f"CPU-seconds per video at {width}x{height}x{frames} (this machine, one core):")
    print("  " + "  ".join(f"{name} {seconds:.3f}" for name, seconds in costs.items()) + f"  total {total:.3f}")
    for model, seconds in MODELS.items():
        print(f"  {model}: {seconds:g} s/video -> {total / seconds:.2f} CPUs per GPU for the CPU stages")


def throughput(width: int, height: int, frames: int, pools: list[int], gpu_seconds: list[float], items: int) -> None:
    print(
        f"\n{'gpus':>4} {'T s':>5} {'items':>6} {'videos/s':>9} {'ideal':>6} {'first commit s':>15} "
        f"{'driver MiB':>11} {'store MiB':>10}"
    )
    for gpus in pools:
        for seconds in gpu_seconds:
            with tempfile.TemporaryDirectory() as scratch:
                got = run_job(_job(Path(scratch), items, width, height, frames, gpus), gpus, seconds)
            print(
                f"{gpus:>4} {seconds:>5g} {got['videos']:>6} {got['videos_per_s']:>9.2f} "
                f"{gpus / seconds:>6.2f} {got['first_commit_s']:>15.1f} {got['driver_mib']:>11.0f} "
                f"{got['store_mib']:>10.0f}"
            )


def memory(width: int, height: int, frames: int, sizes: list[int], window: float) -> None:
    print(f"\nmemory by job size (1 GPU, T 0.5 s, stopped after {window:g} s):")
    print(f"{'items':>8} {'videos':>7} {'first commit s':>15} {'driver MiB':>11} {'store MiB':>10} {'feed MiB':>9}")
    peaks = []
    for items in sizes:
        with tempfile.TemporaryDirectory() as scratch:
            got = run_job(_job(Path(scratch), items, width, height, frames, 1), 1, 0.5, window=window)
        peaks.append(got)
        print(
            f"{items:>8} {got['videos']:>7} {got['first_commit_s']:>15.1f} {got['driver_mib']:>11.0f} "
            f"{got['store_mib']:>10.1f} {got['feed_mib']:>9.0f}"
        )
    if len(peaks) > 1:
        # The object store's pages are counted from 1 MiB up: below that they are Ray's own, not the job's.
        print(
            f"largest / smallest job: driver {peaks[-1]['driver_mib'] / peaks[0]['driver_mib']:.2f}x, "
            f"object store {max(peaks[-1]['store_mib'], 1) / max(peaks[0]['store_mib'], 1):.2f}x (from 1 MiB), "
            f"feed {peaks[-1]['feed_mib'] / max(peaks[0]['feed_mib'], 1):.2f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="1024x576x25", help="WIDTHxHEIGHTxFRAMES of every video.")
    parser.add_argument("--gpus", default="1,2,4", help="Logical GPUs (one generation actor each).")
    parser.add_argument("--gpu-seconds", default="2,0.5", help="Simulated GPU seconds per video.")
    parser.add_argument("--items", type=int, default=24, help="Items per throughput run.")
    parser.add_argument(
        "--memory-items", default="1000,100000", help="Job sizes for the memory comparison (empty: none)."
    )
    parser.add_argument("--window", type=float, default=90.0, help="Seconds each memory run renders before SIGINT.")
    parser.add_argument("--tiny-items", type=int, default=3000, help="Items of the embedded-model run (0: none).")
    args = parser.parse_args()
    width, height, frames = (int(part) for part in args.size.split("x"))

    stages(width, height, frames)
    throughput(width, height, frames, _numbers(args.gpus, int), _numbers(args.gpu_seconds, float), args.items)
    if args.memory_items:
        memory(width, height, frames, _numbers(args.memory_items, int), args.window)
    if args.tiny_items:
        streaming(args.tiny_items, args.window)


def streaming(items: int, window: float) -> None:
    """The embedded tiny model (no simulated GPU) at the demo's sizes with default compute settings: when the first
    video is written and committed, and how the written count grows, until ``window`` seconds."""
    from svdbatch.demo import prepare

    with tempfile.TemporaryDirectory() as scratch:
        job = prepare(Path(scratch), 6)
        spec = yaml.safe_load(job.read_text())
        keys = [f"item-{index:05d}" for index in range(items)]
        uris = [str(Path(scratch) / "inputs" / f"sample-{index % 6:02d}.png") for index in range(items)]
        pq.write_table(pa.table({"key": keys, "image": uris}), spec["manifest"]["path"])
        spec.update(seeds={"variants": 1}, compute={})
        job.write_text(yaml.safe_dump(spec))
        got = run_job(job, 0, None, window=window)
    print(f"\nembedded tiny model, {items} items at the demo's sizes, default compute, stopped after {window:g} s:")
    print(
        f"first video written {got['first_video_s']:.1f} s, first commit {got['first_commit_s']:.1f} s "
        f"(after the first video: {got['first_commit_s'] - got['first_video_s']:.1f} s); "
        f"driver {got['driver_mib']:.0f} MiB, object store {got['store_mib']:.0f} MiB"
    )
    print("written: " + ", ".join(f"{count} at {seconds:.0f} s" for seconds, count in got["written"]))


if __name__ == "__main__":
    main()
