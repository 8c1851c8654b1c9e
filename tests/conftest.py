"""Shared fixtures: a per-session model cache, sample inputs, and a real local Ray cluster for integration tests.

Ray is started only by tests that ask for ``ray_cluster``, so the unit tests stay fast, and then once for the whole
session: modules share one local cluster. A test that needs a cluster of another shape (multi-node, autoscaling)
calls ``stop_shared_ray()`` first; the next module that asks for ``ray_cluster`` starts the shared one again.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import run_total, scrape, stop_shared_ray

# Every cluster the tests start listens on loopback only. One auth mode for the whole session: Ray caches the mode a
# process first used, so a test that started a `ray start` cluster without tokens would otherwise leave every later
# local cluster of this process unreachable ("InvalidAuthToken").
os.environ["RAY_AUTH_MODE"] = "disabled"


# Test files say their tier in their name; the tier sets the markers, so `-m "not integration"` is the unit tier and
# `-m "not slow"` leaves out everything that starts its own cluster or driver.
TIER_MARKERS = {
    "unit": [],
    "ray": ["integration"],
    "s3": ["integration"],
    "browser": ["integration"],
    "cluster": ["integration", "slow"],
}


def pytest_collection_modifyitems(items):
    for item in items:
        name = item.path.name
        tier = name.removeprefix("test_").split("_")[0]
        if tier not in TIER_MARKERS:
            tiers = ", ".join(TIER_MARKERS)
            raise pytest.UsageError(f"{name}: a test file is named test_<tier>_..., tier one of {tiers}")
        for marker in TIER_MARKERS[tier]:
            item.add_marker(marker)


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory) -> Path:
    """One tiny-model cache per test session (and per CI run); Ray workers inherit it from the environment."""
    root = Path(os.environ.get("SVDBATCH_TEST_CACHE") or tmp_path_factory.mktemp("svdbatch-cache"))
    os.environ["SVDBATCH_CACHE"] = str(root)
    return root


@pytest.fixture(scope="session")
def _shared_ray():
    yield
    stop_shared_ray()


def ensure_ray():
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
    return ray


@pytest.fixture(scope="module")
def ray_cluster(_shared_ray):
    return ensure_ray()


@pytest.fixture(scope="session")
def operator_output(_shared_ray, tmp_path_factory) -> Path:
    """The operator flow run once per session: ``manifest`` on a folder, ``run`` (one image broken), a rerun and
    ``report`` with a relative output path; the report tests and the browser test read what it left."""
    import yaml
    from helpers import TEST_COMPUTE, TEST_RENDER, write_images

    from svdbatch.cli import main

    ensure_ray()
    folder = tmp_path_factory.mktemp("operator")
    write_images(folder / "images" / "shoes", 3)
    (folder / "images" / "broken.png").write_bytes(b"not a png")
    (folder / "images" / "readme.txt").write_text("not an image, not listed")
    assert main(["manifest", str(folder / "images"), "-o", str(folder / "m.parquet"), "--column", "fps=5"]) == 0
    job = {
        "manifest": {"path": str(folder / "m.parquet")},
        "output": {"url": str(folder / "out")},
        "render": {key: value for key, value in TEST_RENDER.items() if key != "fps"},
        "compute": TEST_COMPUTE,
        "failures": {"max_error_fraction": 1.0},  # the rerun retries only the broken image: it fails again
    }
    (folder / "job.yaml").write_text(yaml.safe_dump(job))
    assert main(["run", str(folder / "job.yaml"), "--quiet"]) == 1  # one item failed: exit status says so
    assert main(["run", str(folder / "job.yaml"), "--quiet"]) == 1  # a rerun: only the failed item, failing again
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)  # a relative output path, as in the README's `svdbatch report demo-output/output`
        assert main(["report", "out"]) == 0
    return folder


METRICS_WAIT_S = 90  # Ray's metrics agents export what processes recorded every few seconds


@pytest.fixture(scope="session")
def observed_run(_shared_ray, tmp_path_factory) -> SimpleNamespace:
    """One job with every outcome, on the shared cluster, with a GPU-hour price: 2 ok, 1 failed (not an image) and
    1 rejected (a white image: the tiny model's first frame is 5.8 dB from it, the others' about 10 dB), and its
    report. Also the cluster's Prometheus scrape (``samples``, by name) once the metrics agent exported all 4 items of
    the run: the metrics tests and the browser test share this one run."""
    from helpers import make_spec, write_images, write_manifest
    from PIL import Image

    from svdbatch.ray import driver
    from svdbatch.report.page import write_report

    ray = ensure_ray()
    folder = tmp_path_factory.mktemp("observed")
    images = write_images(folder / "images", 2)
    Image.new("RGB", (96, 80), (255, 255, 255)).save(folder / "white.png")
    (folder / "broken.png").write_bytes(b"not a png")
    images = [*images[:2], str(folder / "white.png"), str(folder / "broken.png")]
    manifest = write_manifest(folder / "m.parquet", {"key": ["a", "b", "white", "broken"], "image": images})
    spec = make_spec(
        manifest,
        folder / "out",
        quality={"min_first_frame_psnr": 8.0},
        failures={"max_error_fraction": 1.0},
        compute={"price_per_gpu_hour": 2.5},
    )
    summary = driver.run(spec, progress=False)
    write_report(str(folder / "out"))
    node = ray.nodes()[0]
    url = f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
    deadline = time.monotonic() + METRICS_WAIT_S
    samples = scrape(url)
    while not _exported(samples, summary.run_id) and time.monotonic() < deadline:
        time.sleep(1)
        samples = scrape(url)
    return SimpleNamespace(folder=folder, summary=summary, samples=samples)


@pytest.fixture(scope="session")
def tune_run(_shared_ray, tmp_path_factory) -> dict:
    """``svdbatch tune`` once per session: 3 of 4 manifest rows x 3 settings (the reference, 1 step instead of 2,
    the step cache) at 64x64, 4 frames, into its default folder; the table test and the browser test share it."""
    import contextlib
    import io

    import yaml
    from helpers import TEST_COMPUTE, numbered_manifest, write_images

    from svdbatch.cli import main

    ensure_ray()
    folder = tmp_path_factory.mktemp("tune")
    manifest = numbered_manifest(folder, write_images(folder / "images", 4), 4)
    render = {"width": 64, "height": 64, "num_frames": 4, "num_inference_steps": 2, "fps": 6}
    job = {"manifest": {"path": str(manifest)}, "output": {"url": str(folder / "out")}, "render": render}
    (folder / "job.yaml").write_text(yaml.safe_dump({**job, "compute": TEST_COMPUTE}))
    tries = ["--try", "render.num_inference_steps=1", "--try", "model.step_cache.enabled=true"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["tune", str(folder / "job.yaml"), "--sample", "3", *tries, "--quiet"])
    assert code == 0, out.getvalue()
    (tune,) = (folder / "out" / "_tune").iterdir()
    return {"folder": folder, "job": folder / "job.yaml", "tune": tune, "out": out.getvalue()}


def _exported(samples: dict[str, list], run_id: str) -> bool:
    """Whether the scrape holds the run's 4 items and Ray Data's rows of the generation operator."""
    generation = [
        sample for sample in samples.get("ray_data_output_rows", []) if "RayRenderer" in sample.labels["operator"]
    ]
    return run_total(samples, "ray_svdbatch_videos_total", run_id) == 4 and bool(generation)
