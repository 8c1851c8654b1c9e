"""GPU faults through the real actor pool, on CPU: errors are injected into the workers' pipeline call by the test
plugin in tests/faults (a sitecustomize on the workers' PYTHONPATH), never by a switch in production code."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from helpers import make_spec, stop_shared_ray, write_images, write_manifest

from svdbatch.ray import driver

PLUGIN = Path(__file__).resolve().parent / "faults"


@pytest.fixture(scope="module")
def faulty_ray(tmp_path_factory):
    """A local Ray whose workers load the fault plugin; each test writes the plan they follow."""
    import ray

    stop_shared_ray()  # workers must start with the plugin on their path: a cluster of its own
    plan = tmp_path_factory.mktemp("faults") / "plan.json"
    plan.write_text("{}")
    saved = {name: os.environ.get(name) for name in ("PYTHONPATH", "SVDBATCH_TEST_FAULTS")}
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PLUGIN), saved["PYTHONPATH"]]))
    os.environ["SVDBATCH_TEST_FAULTS"] = str(plan)
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield plan
    ray.shutdown()
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _run(tmp_path, keys, **compute):
    images = write_images(tmp_path / "images", len(keys))
    manifest = write_manifest(tmp_path / "m.parquet", {"key": keys, "image": images})
    spec = make_spec(manifest, tmp_path / "out", compute=compute, failures={"max_error_fraction": 1.0})
    summary = driver.run(spec, progress=False)
    return summary, {row["key"]: row for row in pq.read_table(tmp_path / "out" / "metadata").to_pylist()}


def test_out_of_memory_splits_the_batch_then_decodes_fewer_frames_then_is_an_error_row(faulty_ray, tmp_path):
    faulty_ray.write_text(json.dumps({"max_batch": 1, "max_decode_chunk": 2, "always_oom": ["huge"]}))
    summary, rows = _run(tmp_path, ["k0", "k1", "k2", "huge"], batch_size=2)
    assert (summary.rendered, summary.failed) == (3, 1)
    for key in ("k0", "k1", "k2"):
        assert rows[key]["status"] == "ok"
        assert (rows[key]["batch_items"], rows[key]["decode_chunk_size"]) == (1, 2)  # what was actually used
    assert "out of memory at batch 1, decode_chunk_size 1" in rows["huge"]["error"]


def test_lost_device_restarts_the_actor_and_retries_its_items(faulty_ray, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    # k1 poisons two actors, then renders; k3 poisons every actor, so after 3 it is an error row, not a hang.
    faulty_ray.write_text(json.dumps({"lose_device": {"k1": 2, "k3": 99}, "markers": str(markers)}))
    keys = ["k0", "k1", "k2", "k3"]
    summary, rows = _run(tmp_path, keys, batch_size=1)
    table = pq.read_table(tmp_path / "out" / "metadata").to_pylist()
    assert Counter(row["key"] for row in table) == Counter(keys)  # nothing lost, nothing twice
    assert (summary.rendered, summary.failed) == (3, 1)
    assert all(rows[key]["status"] == "ok" for key in ("k0", "k1", "k2"))
    assert "illegal memory access" in rows["k3"]["error"] and "on 3 fresh actors" in rows["k3"]["error"]
    assert len(list(markers.iterdir())) == 2 + 3
    record = json.loads((tmp_path / "out" / "_job" / "summary.json").read_text())
    # The first actor and the four that replaced a lost one each loaded the model and said how long it took.
    assert len(record["workers"]) >= 1 + 4
    assert all(worker["load_seconds"] > 0 for worker in record["workers"])
