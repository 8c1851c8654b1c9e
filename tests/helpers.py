"""Builders for test inputs: sample images, manifests and job specs sized for a 2-core machine."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from svdbatch.demo import sample_image
from svdbatch.spec.load import build_spec

TEST_RENDER = {"width": 64, "height": 64, "num_frames": 8, "num_inference_steps": 2, "fps": 6}
# model_index.json of the SVD pipelines on the hub: the components a copy takes files from.
SVD_INDEX = {
    "_class_name": "StableVideoDiffusionPipeline",
    "unet": ["diffusers", "UNetSpatioTemporalConditionModel"],
    "vae": ["diffusers", "AutoencoderKLTemporalDecoder"],
    "image_encoder": ["transformers", "CLIPVisionModelWithProjection"],
    "scheduler": ["diffusers", "EulerDiscreteScheduler"],
    "feature_extractor": ["transformers", "CLIPImageProcessor"],
}
TEST_COMPUTE = {"actors": 1, "batch_size": 2, "cpus_per_actor": 0.5, "cpus_per_task": 0.25, "torch_threads": 1}


def write_images(folder: Path, count: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = folder / f"img-{index:03d}.png"
        sample_image(index, 96, 80).save(path)
        paths.append(str(path))
    return paths


def write_manifest(path: Path, columns: dict[str, list]) -> Path:
    pq.write_table(pa.table(columns), path)
    return path


def numbered_manifest(folder: Path, images: list[str], count: int) -> Path:
    """A manifest of ``count`` rows, keys item-000..., cycling through ``images``."""
    paths = [images[index % len(images)] for index in range(count)]
    return write_manifest(folder / "manifest.parquet", {"key": [f"item-{i:03d}" for i in range(count)], "image": paths})


def make_spec(manifest: Path | str, output: Path | str, storage_options: dict | None = None, **sections):
    data = {
        "storage_options": storage_options or {},
        "manifest": {"path": str(manifest)},
        "output": {"url": str(output)},
        "render": dict(TEST_RENDER),
        "seeds": {"base_seed": 7, "variants": 1},
        "compute": dict(TEST_COMPUTE),
    }
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    return build_spec(data)


def write_job(folder: Path, count: int) -> Path:
    """A job spec YAML of ``count`` sample images at the test render size and compute, its output at ``folder/out``:
    for the tests that run the svdbatch command in a process of its own."""
    images = write_images(folder / "images", count)
    spec = {
        "manifest": {"path": str(numbered_manifest(folder, images, count))},
        "output": {"url": str(folder / "out")},
        "render": TEST_RENDER,
        "compute": TEST_COMPUTE,
    }
    job = folder / "job.yaml"
    job.write_text(yaml.safe_dump(spec))
    return job


def stop_shared_ray() -> None:
    """Disconnect from the session's shared local cluster (conftest.ray_cluster) before starting another shape."""
    import ray

    if ray.is_initialized():
        ray.shutdown()


def shard_samples(output: Path) -> Counter:
    """How often each sample key occurs across every tar under shards/, indexed or not."""
    counts: Counter = Counter()
    for path in (Path(output) / "shards").glob("*"):
        if path.name != "index.json":
            with tarfile.open(path) as archive:
                counts.update(name.split(".", 1)[0] for name in archive.getnames() if name.endswith(".mp4"))
    return counts


def save_variant_model(folder: Path) -> Path:
    """The tiny pipeline laid out like a hub folder: fp32 and fp16 files per component and a stray checkpoint."""
    from safetensors.torch import load_file, save_file

    from svdbatch.model.loading import ensure_tiny_model

    shutil.copytree(ensure_tiny_model(), folder)
    for path in list(folder.rglob("*.safetensors")):
        half = {name: tensor.half() for name, tensor in load_file(path).items()}
        save_file(half, path.with_name(path.name.replace(".safetensors", ".fp16.safetensors")))
    (folder / "svd_xt.safetensors").write_bytes(bytes(256 * 1024))
    return folder


def perturbed_weights(data: bytes) -> bytes:
    """The same safetensors file with every tensor nudged: new weights under the same name."""
    from safetensors.torch import load, save

    return save({name: tensor + 0.01 for name, tensor in load(data).items()})


def scrape(url: str) -> dict[str, list]:
    """A Prometheus endpoint's samples by name, parsed with prometheus_client's own parser."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(url, timeout=10).read().decode()
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def run_total(samples: dict[str, list], name: str, run_id: str, by: str | None = None):
    """The sum of one metric's samples of a run, or the sums per value of the label ``by``."""
    found = [sample for sample in samples.get(name, []) if sample.labels.get("run_id") == run_id]
    if by is None:
        return sum(sample.value for sample in found)
    sums: dict[str, float] = {}
    for sample in found:
        sums[sample.labels[by]] = sums.get(sample.labels[by], 0) + sample.value
    return sums


def stop_group(process: subprocess.Popen, timeout_s: float = 60) -> None:
    """Stop a process started with ``start_new_session=True`` and everything in its group (a `ray start --head
    --block` and its cluster): SIGTERM, then SIGKILL after ``timeout_s``. Touches no other process."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def driver_env() -> dict[str, str]:
    """The environment of an `svdbatch run` subprocess: no RAY_* variable, so it starts a local cluster of its own."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("RAY_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_command(job: Path) -> list[str]:
    return [sys.executable, "-m", "svdbatch", "run", str(job), "--quiet"]


def kill_after_first_commit(job: Path, output: Path, timeout_s: float = 300) -> tuple[int, int]:
    """Start `svdbatch run` on ``job`` and SIGKILL it, with the local Ray cluster it started, as soon as it wrote its
    first commit file: (the killed driver's pid, the rows it committed)."""
    from svdbatch.store.commit import COMMITS

    driver = subprocess.Popen(run_command(job), env=driver_env(), start_new_session=True, stdout=subprocess.DEVNULL)
    commits = output / COMMITS
    deadline = time.time() + timeout_s
    while not (commits.exists() and any(commits.iterdir())) and time.time() < deadline:
        assert driver.poll() is None, "the driver finished before it could be killed"
        time.sleep(0.2)
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and the local Ray cluster it started
    driver.wait()
    return driver.pid, pq.read_table(commits).num_rows
