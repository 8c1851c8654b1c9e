"""Bookkeeping on a head with many logical CPUs: every task that reads or decides the committed state asks Ray for
its memory (ray/dataset.py), so a node with 32 CPUs runs as many of them at once as its memory holds, not one per
quarter CPU. `svdbatch plan` of a manifest split into many files, on a node Ray is told has 32 CPUs
(RAY_OVERRIDE_RESOURCES) and 4 GiB of memory for tasks, stays under a stated total RSS (the command, Ray's own
processes and every worker, sampled every 0.2 s) and prints none of the raylet's worker start-up warnings."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time

import psutil
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from helpers import make_spec, write_images

ROWS, FILES = 40_000, 40
NODE = {"CPU": 32, "memory": 4 * 2**30}
# Measured 2026-12-07 on the idle 2-core box: 1.94 GiB at the peak, three runs (2.9-3.4 GiB, and once 4.10 in CI,
# while the prune's key hashes took one task, so one Python worker of ~250 MiB, per manifest file). Before issue 35:
# 8.07 GiB, of which 27 FooterReader actors (Ray Data starts 32 per read_parquet) 5.2 GiB, and the raylet warned of 28
# workers starting at once.
TOTAL_RSS_BOUND = 4 * 2**30


def _publish_all_but_two(spec, manifest: pa.Table, output) -> None:
    """The output as a publish leaves it after an earlier run rendered every row but the last two."""
    from svdbatch.items.expand import expand_batch
    from svdbatch.items.metadata import METADATA_SCHEMA
    from svdbatch.model.identity import model_identity
    from svdbatch.render.feed import source_versions
    from svdbatch.store import commit

    done = manifest.slice(0, manifest.num_rows - 2)
    identities = {"model": model_identity(spec.model, spec.storage_options), "sources": source_versions(done, spec)}
    items = expand_batch(done, spec, "earlier", spec.output.url, identities=identities)
    items = items.select(METADATA_SCHEMA.names).cast(METADATA_SCHEMA)
    finished = pa.array([dt.datetime.now(dt.timezone.utc)] * items.num_rows, METADATA_SCHEMA.field("finished_at").type)
    items = items.set_column(items.schema.get_field_index("finished_at"), "finished_at", finished)
    buckets = pa.array([commit.bucket_of(key) for key in items["key"].to_pylist()], pa.int32())
    (output / "metadata").mkdir(parents=True)
    for bucket in pc.unique(buckets).to_pylist():
        pq.write_table(items.filter(pc.equal(buckets, bucket)).sort_by("key"), commit.bucket_path(str(output), bucket))


def _peak_rss(process: psutil.Popen) -> int:
    """The peak RSS of a process and all its descendants, sampled until it ends."""
    peak = 0
    while process.poll() is None:
        total = 0
        try:
            for one in [process, *process.children(recursive=True)]:
                total += one.memory_info().rss
        except psutil.Error:
            pass
        peak = max(peak, total)
        time.sleep(0.2)
    return peak


def test_plan_of_a_many_file_manifest_on_a_32_cpu_node_stays_under_the_rss_bound(tmp_path):
    images = write_images(tmp_path / "images", 4)
    keys = [f"row-{index:06d}" for index in range(ROWS)]
    manifest = pa.table({"key": keys, "image": [images[index % 4] for index in range(ROWS)]})
    (tmp_path / "manifest").mkdir()
    per_file = ROWS // FILES
    for number in range(FILES):
        pq.write_table(manifest.slice(number * per_file, per_file), tmp_path / "manifest" / f"{number:03d}.parquet")
    spec = make_spec(tmp_path / "manifest", tmp_path / "out")
    _publish_all_but_two(spec, manifest, tmp_path / "out")
    job = tmp_path / "job.yaml"
    job.write_text(json.dumps(spec.model_dump(mode="json", exclude_unset=True)))

    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    env.update(RAY_OVERRIDE_RESOURCES=json.dumps(NODE), RAY_AUTH_MODE="disabled")
    command = [sys.executable, "-m", "svdbatch", "plan", str(job), "--quiet"]
    process = psutil.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    peak = _peak_rss(process)
    out, err = process.communicate()
    assert process.returncode == 0, out + err
    assert "to render: 2 new" in out and f"{ROWS - 2} already done" in out, out
    print(f"peak RSS of plan on a 32-CPU node: {peak / 2**30:.2f} GiB")
    assert peak < TOTAL_RSS_BOUND, f"peak RSS {peak / 2**30:.2f} GiB"
    assert "worker processes have been started" not in out + err, out + err
