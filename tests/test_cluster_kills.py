"""A driver killed mid-job (with the local Ray cluster it started), then rerun: nothing lost, nothing twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import yaml
from helpers import make_spec, numbered_manifest, shard_samples, write_images

from svdbatch.store import lease_records
from svdbatch.store.commit import COMMITS


def _driver_env() -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("RAY_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def test_killed_driver_then_rerun_renders_only_what_is_missing(tmp_path):
    images = write_images(tmp_path / "images", 8)
    manifest = numbered_manifest(tmp_path, images, 30)
    job = tmp_path / "job.yaml"
    spec = make_spec(manifest, tmp_path / "out").model_dump(mode="json")
    spec["output"]["shards"] = {"enabled": True, "samples_per_shard": 4}
    job.write_text(yaml.safe_dump(spec))
    command = [sys.executable, "-m", "svdbatch", "run", str(job), "--quiet"]
    driver = subprocess.Popen(command, env=_driver_env(), start_new_session=True, stdout=subprocess.DEVNULL)
    commits = tmp_path / "out" / COMMITS
    deadline = time.time() + 300
    while not (commits.exists() and any(commits.iterdir())) and time.time() < deadline:
        assert driver.poll() is None, "the driver finished before it could be killed"
        time.sleep(0.2)
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and the local Ray cluster it started
    driver.wait()
    committed = pq.read_table(commits).num_rows
    assert 0 < committed < 30

    # The killed driver's lease is live until it expires (lease.ttl_s), but its process on this machine is gone: the
    # rerun, at once and without --take-over, takes the lease and resumes.
    _, killed = lease_records.newest_record(*lease_records.lease_folder(str(tmp_path / "out"), {}))
    rerun = subprocess.run(command, env=_driver_env(), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"took the lease of run {killed.run_id} on {killed.host} (pid {driver.pid}," in rerun.stderr
    _, rerun_holder = lease_records.newest_record(*lease_records.lease_folder(str(tmp_path / "out"), {}))
    assert rerun_holder.started < killed.expires  # taken before the killed driver's lease would have expired
    assert f"{30 - committed} ok, 0 failed, {committed} already done" in rerun.stdout
    rows = pq.read_table(tmp_path / "out" / "metadata").to_pylist()
    assert len({(row["key"], row["variant"]) for row in rows}) == len(rows) == 30
    assert not commits.exists() or not any(commits.iterdir())  # compacted into the table
    # Shards: every sample exactly once across all tars on disk (orphans of the killed run removed), all indexed.
    samples = shard_samples(tmp_path / "out")
    assert set(samples.values()) == {1} and len(samples) == 30
    index = json.loads((tmp_path / "out" / "shards" / "index.json").read_text())
    assert sorted(key for keys in index["shards"].values() for key in keys) == sorted(samples)
    assert {row["shard"] for row in rows} == set(index["shards"])
