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


@pytest.fixture(scope="module")
def ray_cluster(_shared_ray):
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
    return ray
