"""A driver killed mid-job (with the local Ray cluster it started), then rerun: nothing lost, nothing twice."""

from __future__ import annotations

import json
import subprocess

import pyarrow.parquet as pq
import yaml
from helpers import (
    driver_env,
    kill_after_first_commit,
    make_spec,
    numbered_manifest,
    run_command,
    shard_samples,
    write_images,
)

from svdbatch.store import lease_records
from svdbatch.store.commit import COMMITS


def test_killed_driver_then_rerun_renders_only_what_is_missing(tmp_path):
    images = write_images(tmp_path / "images", 8)
    manifest = numbered_manifest(tmp_path, images, 30)
    job = tmp_path / "job.yaml"
    spec = make_spec(manifest, tmp_path / "out").model_dump(mode="json")
    spec["output"]["shards"] = {"enabled": True, "samples_per_shard": 4}
    job.write_text(yaml.safe_dump(spec))
    killed_pid, committed = kill_after_first_commit(job, tmp_path / "out")
    assert 0 < committed < 30
    commits = tmp_path / "out" / COMMITS

    # The killed driver's lease is live until it expires (lease.ttl_s), but its process on this machine is gone: the
    # rerun, at once and without --take-over, takes the lease and resumes.
    _, killed = lease_records.newest_record(*lease_records.lease_folder(str(tmp_path / "out"), {}))
    rerun = subprocess.run(run_command(job), env=driver_env(), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"took the lease of run {killed.run_id} on {killed.host} (pid {killed_pid}," in rerun.stderr
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
