"""The prepared GPU check (run by benchmarks/device_check.sh): svdbatch's real pipeline vs bare diffusers.

    benchmarks/device_check.sh             # CUDA: full-size SVD-XT architecture, random fp16 weights, 1024x576x25
    benchmarks/device_check.sh --reduced   # anywhere: the embedded tiny model at 64x64, 4 frames (the tests run it)

The random SVD-XT pipeline (svdbatch.model.loading.build_svd_xt, which costs the FLOPs of the real weights) is saved
once as a diffusers folder and loaded by every run as ``model.source``, as a user's job would. Bare diffusers renders
the same 3 images, one call each, with the default options. Then ``svdbatch.ray.driver.run`` renders them four times,
each a job of its own with one actor: the default settings, ``model.step_cache``, ``model.compile_unet``, and 4 steps
without guidance (max_guidance_scale 1) with the consistency sampler (``model.scheduler.name``; SAMPLER in the
script). Seconds per video are warm: the mean leaving out the slowest video of each run, an actor's first call
(warm-up, or the UNet's compilation), as plan's learned figures do; peak memory is the rows' ``peak_gpu_bytes``.
First, a row per model family (Wan 2.2 TI2V 5B, LTX-Video 2B): one transformer step at full size, random weights.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from svdbatch.estimate.learned import warm_seconds  # noqa: E402
from svdbatch.spec.config import SpecError  # noqa: E402
from svdbatch.spec.load import build_spec

FULL = dict(width=1024, height=576, num_frames=25, num_inference_steps=25, decode_chunk_size=5)
REDUCED = dict(width=64, height=64, num_frames=4, num_inference_steps=6, decode_chunk_size=4)
REDUCED_COMPUTE = {"actors": 1, "cpus_per_actor": 0.5, "cpus_per_task": 0.25, "torch_threads": 1}
FEW_STEPS = ["render.num_inference_steps=4", "render.min_guidance_scale=1", "render.max_guidance_scale=1"]


def configurations(sampler: str) -> list[tuple[str, list[str]]]:
    return [
        ("default", []),
        ("step cache", ["model.step_cache.enabled=true"]),
        ("compile_unet", ["model.compile_unet=true"]),
        (f"4 steps, no CFG, {sampler}", [*FEW_STEPS, f"model.scheduler.name={sampler}"]),
    ]


def write_inputs(folder: Path, shape: dict, videos: int) -> Path:
    """Random images and their manifest (rows keyed v0, v1, ...)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for index in range(videos):
        path = folder / f"image-{index}.png"
        Image.fromarray(rng.integers(0, 255, (shape["height"], shape["width"], 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    pq.write_table(pa.table({"key": [f"v{i}" for i in range(videos)], "image": paths}), folder / "manifest.parquet")
    return folder / "manifest.parquet"


def bare(pipe, shape: dict, videos: int, device: str) -> tuple[float, float | None]:
    """Warm seconds per video and peak GPU bytes of the documented diffusers call, one image per call."""
    import numpy as np
    import torch
    from gpu import bare_call
    from PIL import Image

    pipe.set_progress_bar_config(disable=True)
    rng = np.random.default_rng(0)
    seconds = []
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for index in range(videos):
        image = Image.fromarray(rng.integers(0, 255, (shape["height"], shape["width"], 3), dtype=np.uint8))
        started = time.perf_counter()
        bare_call(pipe, image, shape, device, index)
        seconds.append(time.perf_counter() - started)
    return warm_seconds(seconds), torch.cuda.max_memory_allocated() if device == "cuda" else None


def prepare_model(reduced: bool, folder: Path):
    """(model.source, the pipeline for the bare run, device). Full size: random SVD-XT saved as a diffusers folder."""
    import torch

    from svdbatch.model.loading import build_svd_xt, build_tiny_pipeline, quiet_libraries

    quiet_libraries()
    if reduced:
        torch.set_num_threads(REDUCED_COMPUTE["torch_threads"])  # as the runs' actors
        return "svdbatch:tiny", build_tiny_pipeline(), "cpu"
    pipe = build_svd_xt("cuda", torch.float16)
    started = time.perf_counter()
    pipe.save_pretrained(folder / "svd-xt-random")
    print(f"random SVD-XT saved in {time.perf_counter() - started:.0f} s", flush=True)
    return str(folder / "svd-xt-random"), pipe, "cuda"


def job(manifest: Path, output: Path, source: str, shape: dict, reduced: bool) -> dict:
    """The job spec of one configuration's run, before its overrides."""
    return {
        "manifest": {"path": str(manifest)},
        "output": {"url": str(output)},
        "model": {"source": source, "device": "cpu" if reduced else "cuda"},
        "render": dict(shape),
        "compute": REDUCED_COMPUTE if reduced else {"actors": 1},
    }


def measured(spec) -> tuple[float, float | None, int]:
    """Warm seconds per video, peak GPU bytes and videos of a finished run, from its rows."""
    from svdbatch.store import commit

    rows = [row for row in commit.read_rows(spec.output.url).to_pylist() if row["status"] == "ok"]
    peaks = [row["peak_gpu_bytes"] for row in rows if row["peak_gpu_bytes"] is not None]
    return warm_seconds([row["generate_seconds"] for row in rows]), max(peaks) if peaks else None, len(rows)


def sampler_overrides(name: str, overrides: list[str], base) -> tuple[str, list[str]]:
    """The configuration's overrides, without ``model.scheduler`` where this checkout's spec has none (said so)."""
    try:
        build_spec(base, overrides)
        return name, overrides
    except SpecError as error:
        print(f"sampler: {error}; the 4-step run uses the model's own sampler", flush=True)
        return name.rsplit(",", 1)[0] + ", default sampler", [item for item in overrides if "scheduler" not in item]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reduced", action="store_true", help="The tiny model on the CPU, in under 2 minutes.")
    parser.add_argument("--videos", type=int, default=3, help="Videos per configuration.")
    parser.add_argument("--sampler", default="consistency", help="model.scheduler.name of the 4-step run.")
    parser.add_argument("--dir", help="Scratch folder (default: a new temporary one).")
    args = parser.parse_args()
    if args.reduced:
        # Inductor needs minutes for even the tiny UNet on 2 cores: --reduced runs compile_unet's path uncompiled.
        os.environ["TORCHDYNAMO_DISABLE"] = "1"
    folder = Path(args.dir or tempfile.mkdtemp(prefix="svdbatch-device-check-"))
    shape = REDUCED if args.reduced else FULL
    family_rows(args.reduced)
    source, pipe, device = prepare_model(args.reduced, folder)
    print(f"device: {device}; {shape['width']}x{shape['height']}, {shape['num_frames']} frames", flush=True)
    rows = [("bare diffusers", shape["num_inference_steps"], *bare(pipe, shape, args.videos, device), args.videos)]
    del pipe
    manifest = write_inputs(folder, shape, args.videos)
    from svdbatch.ray import cluster, driver

    cluster.start_ray(verbose=False, progress=False, cli=True)  # as the CLI: Ray's native notices filtered out
    for index, (name, overrides) in enumerate(configurations(args.sampler)):
        base = job(manifest, folder / f"out{index}", source, shape, args.reduced)
        name, overrides = sampler_overrides(name, overrides, base)
        spec = build_spec(base, overrides)
        driver.run(spec, progress=False)
        rows.append((name, spec.render.num_inference_steps, *measured(spec)))
    print_table(rows)


def family_rows(reduced: bool) -> None:
    """A row per model family: one transformer step (both guidance halves) of Wan 2.2 TI2V 5B at 704x1280x121 and
    LTX-Video 2B at 512x704x121 with random bf16 weights on the GPU, bare module, warm; its FLOPs (the meta-device
    count plan uses) over the seconds is the rate reached. --reduced: the tiny transformers at 64x64x9 on the CPU."""
    import torch
    from diffusers import LTXVideoTransformer3DModel, WanTransformer3DModel

    from svdbatch.model import ltx, wan
    from svdbatch.model.loading import quiet_libraries

    quiet_libraries()
    device, dtype = ("cpu", torch.float32) if reduced else ("cuda", torch.bfloat16)
    wan_full, ltx_full = wan.FULL_SIZE["Wan 2.2 TI2V 5B"], ltx.FULL_SIZE["LTX-Video 2B"]
    cases = [
        ("Wan 2.2 TI2V 5B", WanTransformer3DModel, wan.TINY_TRANSFORMER if reduced else wan_full["transformer"]),
        ("LTX-Video 2B", LTXVideoTransformer3DModel, ltx.TINY_TRANSFORMER if reduced else ltx_full["transformer"]),
    ]
    print(f"{'family step, random weights':<34}{'size':>14}{'s/step':>10}{'TFLOP':>10}{'TFLOP/s':>10}", flush=True)
    for (name, module_class, config), full in zip(cases, (wan_full, ltx_full), strict=True):
        width, height, frames = (64, 64, 9) if reduced else (full["width"], full["height"], full["num_frames"])
        with torch.device(device):
            model = module_class(**config).to(dtype).eval()
        if module_class is WanTransformer3DModel:
            spatial = 8 if reduced else full["vae"]["scale_factor_spatial"]
            args = wan.transformer_inputs(model, width, height, frames, spatial, 2, device)
            flops = wan.transformer_flops(config, width, height, frames, spatial, 2)
        else:
            args = ltx.transformer_inputs(model, width, height, frames, 2, device)
            flops = ltx.transformer_flops(config, width, height, frames, 2)
        args = {key: value.to(dtype) if torch.is_tensor(value) else value for key, value in args.items()}
        with torch.inference_mode():
            model(**args)  # warm-up
            if device == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            model(**args)
            if device == "cuda":
                torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        size = f"{height}x{width}x{frames}"
        print(f"{name:<34}{size:>14}{seconds:>10.3f}{flops / 1e12:>10.1f}{flops / seconds / 1e12:>10.1f}", flush=True)
        del model, args
        if device == "cuda":
            torch.cuda.empty_cache()


def print_table(rows: list[tuple]) -> None:
    bare_seconds = rows[0][2]
    print(f"{'configuration':<34}{'steps':>6}{'s/video':>10}{'peak GiB':>10}{'videos':>8}{'vs bare':>9}")
    for name, steps, seconds, peak, videos in rows:
        peak_text = "n/a (CPU)" if peak is None else f"{peak / 2**30:.1f}"
        print(f"{name:<34}{steps:>6}{seconds:>10.3f}{peak_text:>10}{videos:>8}{bare_seconds / seconds:>8.2f}x")


if __name__ == "__main__":
    main()
