"""Shared fixtures: a per-session model cache, sample inputs, and a real local Ray cluster for integration tests.

Ray is started only by tests that ask for ``ray_cluster`` (module scope), so the unit tests stay fast.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory) -> Path:
    """One tiny-model cache per test session (and per CI run); Ray workers inherit it from the environment."""
    root = Path(os.environ.get("SVDBATCH_TEST_CACHE") or tmp_path_factory.mktemp("svdbatch-cache"))
    os.environ["SVDBATCH_CACHE"] = str(root)
    return root


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield ray
    ray.shutdown()
