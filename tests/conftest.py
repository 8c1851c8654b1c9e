"""Shared fixtures: a per-session model cache, sample inputs, and a real local Ray cluster for integration tests.

Ray is started only by tests that ask for ``ray_cluster``, so the unit tests stay fast, and then once for the whole
session: modules share one local cluster. A test that needs a cluster of another shape (multi-node, autoscaling)
calls ``stop_shared_ray()`` first; the next module that asks for ``ray_cluster`` starts the shared one again.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import stop_shared_ray

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
