"""Resume and publish at scale: a job of N rows whose metadata table already holds N-2 done rows.

    python benchmarks/scale.py [--rows 1000000,3000000,10000000] [--old-tree /tmp/old-svdbatch --old-rows 100000]
                               [--old-layout new]

For each size the done-table is built column-wise with the real seeds and fingerprints (``items.expand_batch``),
written in the layout of the code under test (bucket files; ``metadata/metadata.parquet`` for the old tree, e.g.
``git worktree add /tmp/old-svdbatch 9a19628``; ``--old-layout new`` for an old tree that already wrote buckets),
and the job is timed twice. First as a user runs it: the ``svdbatch plan`` and ``svdbatch run`` commands, each a
fresh process that starts its own Ray (CLI plan s, CLI run s: the whole command; stderr lines: what the two wrote
to stderr with --quiet, piped, i.e. Ray's warnings, if any). Then, with the output put back as
built, inside one process whose Ray is already up: ``make_plan`` and then ``ray.driver.run`` (plan s, run s), with the
time of the run's last publish, the driver's peak RSS, the peak of the Ray workers' RSS together (the ``ray::``
processes) and the peak RSS of the driver plus every Ray process below it (raylet, object store, workers), sampled
every 0.2 s. Each run renders the 2 new items at 32x32, 2 frames, 1 step.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import Peaks

ROOT = Path(__file__).resolve().parents[1]
BUILD_BATCH = 200_000
# The metadata columns of the code before identities (9a19628): its table is written with these only.
OLD_COLUMNS = [
    "run_id", "key", "variant", "source_uri", "video_uri", "seed", "width", "height", "num_frames",
    "num_inference_steps", "fps", "motion_bucket_id", "noise_aug_strength", "min_guidance_scale",
    "max_guidance_scale", "decode_chunk_size", "fit", "model_source", "model_dtype", "model_options", "video_codec",
    "bytes", "sha256", "fingerprint", "rerender_reason", "status", "error", "batch_items", "device", "node_id",
    "gpu_id", "load_seconds", "generate_seconds", "encode_seconds", "write_seconds", "finished_at",
]


def _spec_data(folder: Path, layout: str = "new") -> dict:
    """The job of every size; the code before 9a19628's successor named the pool size ``compute.num_actors``."""
    pool = {"num_actors": 1} if layout == "old" else {"actors": 1}
    return {
        "manifest": {"path": str(folder / "manifest")},
        "output": {"url": str(folder / "out")},
        "render": {"width": 32, "height": 32, "num_frames": 2, "num_inference_steps": 1, "fps": 4},
        "compute": {**pool, "batch_size": 2, "cpus_per_actor": 0.5, "cpus_per_task": 0.25},
        "video": {"preset": "ultrafast"},
    }


def build(folder: Path, rows: int, layout: str) -> None:
    """The manifest (N rows) and a done-table of its first N-2 items, as an earlier run would have written it."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    sys.path.insert(0, str(ROOT))
    from svdbatch import formats
    from svdbatch.demo import sample_image
    from svdbatch.items.expand import expand_batch
    from svdbatch.items.metadata import METADATA_SCHEMA
    from svdbatch.model.identity import model_identity
    from svdbatch.render.feed import source_versions
    from svdbatch.spec.load import build_spec
    from svdbatch.store import commit

    images = []
    for index in range(8):
        path = folder / "images" / f"{index}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        sample_image(index, 160, 90).save(path)
        images.append(str(path))
    spec = build_spec(_spec_data(folder))
    weights = model_identity(spec.model, spec.storage_options)  # what a run records: the rows must match it
    (folder / "manifest").mkdir()
    (folder / "out" / "metadata").mkdir(parents=True)
    parts = folder / "parts"  # done rows by bucket, one file per build batch: memory stays one batch
    finished = pa.scalar(dt.datetime.now(dt.timezone.utc), METADATA_SCHEMA.field("finished_at").type)
    old_schema = pa.schema([METADATA_SCHEMA.field(name) for name in OLD_COLUMNS])
    legacy = pq.ParquetWriter(folder / "out" / formats.TABLE_1, old_schema) if layout == "old" else None
    for start in range(0, rows, BUILD_BATCH):
        count = min(BUILD_BATCH, rows - start)
        manifest = pa.table(
            {
                "key": pa.array([f"row-{index:09d}" for index in range(start, start + count)]),
                "image": pa.array([images[index % 8] for index in range(start, start + count)]),
            }
        )
        pq.write_table(manifest, folder / "manifest" / f"part-{start // BUILD_BATCH:05d}.parquet")
        done = manifest.slice(0, max(0, min(count, rows - 2 - start)))
        identities = {"model": weights, "sources": source_versions(done, spec)}
        items = expand_batch(done, spec, "synthetic", spec.output.url, identities=identities)
        items = items.select(METADATA_SCHEMA.names).cast(METADATA_SCHEMA)
        items = items.set_column(
            items.schema.get_field_index("finished_at"),
            "finished_at",
            pa.array([finished.as_py()] * items.num_rows, finished.type),
        )
        if legacy:  # rows of row format 1 (svdbatch/formats.py): its fingerprint, no identities
            fingerprints = pa.array([formats.fingerprint_1(item, spec) for item in items.to_pylist()], pa.string())
            items = items.set_column(items.schema.get_field_index("fingerprint"), "fingerprint", fingerprints)
            legacy.write_table(items.select(OLD_COLUMNS))
            continue
        buckets = pa.array([commit.bucket_of(key) for key in items["key"].to_pylist()], pa.int32())
        for bucket in pc.unique(buckets).to_pylist():
            (parts / str(bucket)).mkdir(parents=True, exist_ok=True)
            pq.write_table(items.filter(pc.equal(buckets, bucket)), parts / str(bucket) / f"{start}.parquet")
    if legacy:
        legacy.close()
        return
    for bucket in range(commit.BUCKETS):
        if (parts / str(bucket)).exists():
            table = pq.read_table(parts / str(bucket))
            pq.write_table(table.sort_by("key"), commit.bucket_path(str(folder / "out"), bucket))
    shutil.rmtree(parts)


def child(folder: Path, layout: str) -> dict:
    """Runs with the tree under test first on sys.path (PYTHONPATH)."""
    import ray

    from svdbatch.cli.plan import make_plan
    from svdbatch.ray import driver
    from svdbatch.spec.load import build_spec
    from svdbatch.store import commit

    publishes: list[float] = []
    publish = commit.publish

    def timed_publish(*args, **kwargs):
        started = time.perf_counter()
        result = publish(*args, **kwargs)
        publishes.append(time.perf_counter() - started)
        return result

    commit.publish = timed_publish
    spec = build_spec(_spec_data(folder, layout))
    peaks = Peaks()
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
    started = time.perf_counter()
    report = make_plan(spec)
    planned = time.perf_counter() - started
    started = time.perf_counter()
    summary = driver.run(spec, progress=False)
    ran = time.perf_counter() - started
    peaks.stop()
    ray.shutdown()
    return {
        "plan_s": planned,
        "to_render": report.counts["new"],
        "run_s": ran,
        "rendered": summary.rendered,
        "skipped": summary.skipped,
        "publish_s": publishes[-1],
        "driver_mib": peaks.mib()["driver"],
        "workers_mib": peaks.mib()["workers"],
        "cluster_mib": peaks.mib()["cluster"],
    }


def cold(folder: Path, tree: Path, layout: str) -> dict:
    """``svdbatch plan`` and then ``svdbatch run`` as a user runs them: each a fresh process that starts its own Ray
    (wall time of the whole command). The run renders the 2 new items, so the output is put back as built after."""
    (folder / "job.yaml").write_text(json.dumps(_spec_data(folder, layout)))
    shutil.copytree(folder / "out", folder / "built")
    env = {key: value for key, value in os.environ.items() if not key.startswith("RAY_")}
    env["PYTHONPATH"] = str(tree)
    times = {}
    for command in ("plan", "run"):
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "svdbatch", command, str(folder / "job.yaml"), "--quiet"],
            capture_output=True,
            text=True,
            env=env,
            cwd=tree,
        )
        times[f"cold_{command}_s"] = time.perf_counter() - started
        # --quiet, piped: the command's own lines only (plan's report, run's summary); anything else is noise
        times[f"cold_{command}_noise"] = sum(1 for line in done.stderr.splitlines() if line.strip())
        if done.returncode:
            sys.exit(f"svdbatch {command} of {tree} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    shutil.rmtree(folder / "out")
    (folder / "built").rename(folder / "out")
    return times


def measure(rows: int, tree: Path, layout: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="svdbatch-scale-") as name:
        folder = Path(name)
        started = time.perf_counter()
        build(folder, rows, layout)
        built = time.perf_counter() - started
        times = cold(folder, tree, layout)
        env = {key: value for key, value in os.environ.items() if not key.startswith("RAY_")}
        env["PYTHONPATH"] = str(tree)
        done = subprocess.run(
            [sys.executable, __file__, "--child", str(folder), "--layout", layout],
            capture_output=True,
            text=True,
            env=env,
            cwd=tree,
        )
        if done.returncode:
            sys.exit(f"the {rows}-row run of {tree} failed:\n{done.stderr[-3000:]}")
        shutil.rmtree(folder / "out", ignore_errors=True)
    return {"rows": rows, "build_s": built, **times, **json.loads(done.stdout.strip().splitlines()[-1])}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", default="1000000,3000000,10000000", help="Job sizes for this tree.")
    parser.add_argument("--old-tree", type=Path, help="A checkout of the code before the change, for comparison.")
    parser.add_argument("--old-rows", default="100000,1000000", help="Job sizes for the old tree.")
    parser.add_argument("--old-layout", default="old", choices=["old", "new"], help="The old tree's table layout.")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--layout", default="new", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.layout)))
        return
    runs = [(int(rows), ROOT, "new", "new") for rows in args.rows.split(",")]
    if args.old_tree:
        runs += [(int(rows), args.old_tree, args.old_layout, "old") for rows in args.old_rows.split(",")]
    header = f"{'tree':>5}{'rows':>10}{'build s':>9}{'CLI plan s':>11}{'CLI run s':>10}{'plan s':>8}{'run s':>8}"
    columns = f"{'publish s':>10}{'driver MiB':>12}{'workers MiB':>13}{'cluster MiB':>13}{'rendered':>9}{'done':>10}"
    columns += f"{'stderr lines':>13}"
    print(header + columns, flush=True)
    for rows, tree, layout, label in runs:
        result = measure(rows, tree, layout)
        print(
            f"{label:>5}{result['rows']:>10}{result['build_s']:>9.1f}{result['cold_plan_s']:>11.1f}"
            f"{result['cold_run_s']:>10.1f}{result['plan_s']:>8.1f}"
            f"{result['run_s']:>8.1f}{result['publish_s']:>10.2f}{result['driver_mib']:>12.0f}"
            f"{result['workers_mib']:>13.0f}"
            f"{result['cluster_mib']:>13.0f}{result['rendered']:>9}{result['skipped']:>10}"
            f"{result['cold_plan_noise'] + result['cold_run_noise']:>13}",
            flush=True,
        )


if __name__ == "__main__":
    main()
