"""Resume, exactly-once and fault tolerance, on a real local Ray cluster with the tiny model."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest
from helpers import make_spec, numbered_manifest, write_images, write_manifest

from svdbatch.errors import JobError
from svdbatch.ray import driver
from svdbatch.render.video import probe
from svdbatch.store import state


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_images(tmp_path_factory.mktemp("images"), 8)


def _table(output: Path) -> list[dict]:
    return pq.read_table(output / "metadata").to_pylist()


def _assert_exactly_once(output: Path, expected_items: int) -> None:
    rows = _table(output)
    ids = [(row["key"], row["variant"]) for row in rows]
    assert len(ids) == len(set(ids)) == expected_items
    assert {row["status"] for row in rows} == {"ok"}
    for row in rows:
        assert probe(row["video_uri"]).frames == row["num_frames"]
    videos = sorted(os.listdir(output / "videos"))
    assert videos == sorted(Path(row["video_uri"]).name for row in rows)  # no partial or stray files


def _generation_actor_pids() -> list[int]:
    """This test's generation actors: descendants of this process (its local cluster), never another session's."""
    pids = []
    for process in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if any("RayRenderer" in part for part in process.cmdline()):
                pids.append(process.pid)
    return pids


@pytest.mark.slow
def test_job_survives_generation_actors_being_killed(ray_cluster, images, tmp_path):
    manifest = numbered_manifest(tmp_path, images, 24)
    spec = make_spec(manifest, tmp_path / "out", compute={"actors": 2, "batch_size": 1})
    result: dict = {}
    worker = threading.Thread(target=lambda: result.update(summary=driver.run(spec, progress=False)))
    worker.start()
    kills = 0
    while worker.is_alive() and kills < 3:
        pids = _generation_actor_pids()
        videos = len(os.listdir(tmp_path / "out" / "videos")) if (tmp_path / "out" / "videos").exists() else 0
        if pids and videos > kills * 4:
            os.kill(pids[0], signal.SIGKILL)
            kills += 1
            time.sleep(2)
        time.sleep(0.2)
    worker.join(timeout=600)
    assert kills == 3, "the job ended before three actors could be killed"
    assert result["summary"].rendered == 24 and result["summary"].failed == 0
    _assert_exactly_once(tmp_path / "out", 24)


def test_rerun_of_finished_job_renders_nothing_and_changed_specs_rerender(ray_cluster, images, tmp_path):
    manifest = numbered_manifest(tmp_path, images, 4)
    output = tmp_path / "out"
    first = driver.run(make_spec(manifest, output), progress=False)
    assert (first.rendered, first.skipped) == (4, 0)
    before = {row["key"]: row for row in _table(output)}

    again = driver.run(make_spec(manifest, output), progress=False)
    assert (again.rendered, again.failed, again.skipped) == (0, 0, 4)
    assert {row["key"]: row["sha256"] for row in _table(output)} == {k: r["sha256"] for k, r in before.items()}

    more = driver.run(make_spec(manifest, output, seeds={"variants": 2}), progress=False)
    assert (more.rendered, more.skipped, more.rerendered) == (4, 4, 0)  # only the new variants

    changed = driver.run(make_spec(manifest, output, seeds={"variants": 2}, render={"motion_bucket_id": 40}))
    assert (changed.rendered, changed.skipped, changed.rerendered) == (8, 0, 8)
    rows = _table(output)
    assert len(rows) == 8 and {row["motion_bucket_id"] for row in rows} == {40}
    assert {row["rerender_reason"] for row in rows} == {"spec changed"}
    _assert_exactly_once(output, 8)


def test_max_error_fraction_aborts_only_when_exceeded_and_errors_are_retried(ray_cluster, images, tmp_path):
    missing = [str(tmp_path / f"missing-{i}.png") for i in range(3)]
    manifest = write_manifest(tmp_path / "m.parquet", {"key": ["a", "b", "c", "d"], "image": missing + images[:1]})
    with pytest.raises(JobError, match=r"3 of 4 items failed, more than failures.max_error_fraction=0.5"):
        driver.run(make_spec(manifest, tmp_path / "strict"), progress=False)

    output = tmp_path / "lenient"
    summary = driver.run(make_spec(manifest, output, failures={"max_error_fraction": 0.8}), progress=False)
    assert (summary.rendered, summary.failed) == (1, 3)

    shutil.copy(images[1], missing[0])  # the user fixes one input and resubmits
    retry = driver.run(make_spec(manifest, output, failures={"max_error_fraction": 0.8}), progress=False)
    assert (retry.rendered, retry.failed, retry.skipped, retry.rerendered) == (1, 2, 1, 3)
    rows = {row["key"]: row for row in _table(output)}
    assert len(rows) == 4 and rows["a"]["status"] == "ok" and rows["a"]["rerender_reason"] == "failed before"

    kept = driver.run(
        make_spec(manifest, output, failures={"max_error_fraction": 0.8, "retry_errors": False}), progress=False
    )
    assert (kept.rendered, kept.failed, kept.skipped) == (0, 0, 4)


def test_rejected_items_stay_in_the_table_and_count_as_done_on_reruns(ray_cluster, images, tmp_path):
    manifest = numbered_manifest(tmp_path, images, 3)
    output = tmp_path / "out"
    strict = {"min_first_frame_psnr": 99.0}  # the random tiny model never reproduces its input this closely
    first = driver.run(make_spec(manifest, output, quality=strict), progress=False)
    assert (first.rendered, first.rejected, first.failed) == (0, 3, 0)
    assert "0 ok, 3 rejected, 0 failed" in first.line()
    rows = _table(output)
    assert {row["status"] for row in rows} == {"rejected"}
    assert all("first-frame PSNR" in row["error"] and row["first_frame_psnr"] < 99 for row in rows)

    again = driver.run(make_spec(manifest, output, quality=strict), progress=False)
    assert (again.rendered, again.rejected, again.skipped) == (0, 0, 3)


def test_output_of_the_single_file_version_is_resumed_without_rendering_again(ray_cluster, images, tmp_path):
    from svdbatch import formats
    from svdbatch.cli.plan import make_plan

    manifest = numbered_manifest(tmp_path, images, 4)
    output = tmp_path / "out"
    spec = make_spec(manifest, output)
    driver.run(spec, progress=False)
    table = pq.read_table(output / "metadata")
    for path in (output / "metadata").iterdir():
        path.unlink()
    pq.write_table(table, output / formats.TABLE_1)  # table 1 (svdbatch/formats.py)

    assert make_plan(spec).counts["done"] == 4
    again = driver.run(spec, progress=False)
    assert (again.rendered, again.failed, again.skipped) == (0, 0, 4)
    assert not (output / formats.TABLE_1).exists()
    assert pq.read_table(output / "metadata").sort_by("key").equals(table.sort_by("key"))


def test_driver_reads_only_the_buckets_its_run_touched(ray_cluster, tmp_path, monkeypatch):
    """30,000 rows, 29,998 done: the decision happens in Ray tasks; the driver never reads the table's rows."""
    import importlib.util

    from svdbatch.items import decide, expand
    from svdbatch.spec.load import build_spec
    from svdbatch.store import commit

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "scale.py"
    monkeypatch.syspath_prepend(str(path.parent))  # scale.py imports benchmarks/common.py as a script would
    scale = importlib.util.spec_from_file_location("scale", path)
    module = importlib.util.module_from_spec(scale)
    scale.loader.exec_module(module)
    module.build(tmp_path, 30_000, "new")

    read_rows: list[int] = []
    read_table = pq.read_table

    def counting_read_table(source, *args, **kwargs):
        table = read_table(source, *args, **kwargs)
        if str(tmp_path / "out") in str(getattr(source, "path", source)):  # the manifest's keys are checked here
            read_rows.append(table.num_rows)
        return table

    def refuse(*args, **kwargs):
        raise AssertionError("a per-row path ran on the driver")

    monkeypatch.setattr(state, "PIECE_BYTES", 2**18)  # as a large table: read in several pieces
    monkeypatch.setattr(pq, "read_table", counting_read_table)
    monkeypatch.setattr(expand, "expand_row", refuse)
    monkeypatch.setattr(decide, "resume", refuse)
    summary = driver.run(build_spec(module._spec_data(tmp_path)), progress=False)
    assert (summary.rendered, summary.skipped) == (2, 29_998)
    largest_bucket = max(pq.read_metadata(name).num_rows for name in (tmp_path / "out" / "metadata").iterdir())
    assert sum(read_rows) <= 2 * largest_bucket + 2  # the two touched buckets (and the run's commit file)
    assert len(list((tmp_path / "out" / "metadata").iterdir())) == commit.BUCKETS


def test_one_piece_and_several_plan_alike_every_reason_and_removal(ray_cluster, images, tmp_path, monkeypatch):
    """The committed state read as one piece or as several (a large table) decides every case the same, with a
    commit file newer than the table and rows removed or gone from the manifest."""
    import datetime as dt

    import pyarrow as pa

    from svdbatch.items import manifest
    from svdbatch.items.expand import expand_batch
    from svdbatch.items.metadata import METADATA_SCHEMA
    from svdbatch.model.identity import model_identity
    from svdbatch.render.feed import source_versions
    from svdbatch.store import commit

    keys = [f"k{index}" for index in range(9)]
    path = write_manifest(tmp_path / "m.parquet", {"key": [*keys, "bad"], "image": [*images[:1] * 9, ""]})
    spec = make_spec(path, tmp_path / "out")
    identity = model_identity(spec.model, spec.storage_options)
    table = pa.table({"key": [*keys, "gone1", "gone2", "gone3"], "image": images[:1] * 12})
    identities = {"model": identity, "sources": source_versions(table, spec)}
    rows = {row["key"]: row for row in expand_batch(table, spec, "earlier", spec.output.url, None, identities)
            .select(METADATA_SCHEMA.names).to_pylist()}
    when = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    for row in rows.values():
        row["finished_at"] = when
    rows["k1"]["fingerprint"] = "0" * 32  # spec changed
    rows["k2"].update(source_version="older", fingerprint="1" * 32)
    rows["k3"].update(model_identity="older", fingerprint="2" * 32)
    rows["k4"]["status"] = "error"
    rows["k6"]["status"] = "rejected"
    rows["k7"]["status"] = "removed"
    rows["gone3"]["status"] = "removed"
    del rows["k5"]  # new
    out = tmp_path / "out" / commit.COMMITS
    out.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(list(rows.values()), METADATA_SCHEMA), out / "earlier.parquet")
    commit.publish(str(tmp_path / "out"))
    newer = dict(rows["k8"], status="error", run_id="killed", finished_at=when + dt.timedelta(hours=1))
    pq.write_table(pa.Table.from_pylist([newer], METADATA_SCHEMA), out / "killed.parquet")  # not yet published

    info = manifest.inspect(spec)
    small = driver.plan(spec, info, identity)
    monkeypatch.setattr(state, "piece_count", lambda files: 5)
    large = driver.plan(spec, info, identity)
    assert small == large
    assert small.counts == {"new": 2, "done": 2, "changed": 1, "source_changed": 1, "model_changed": 1, "retry": 2,
                            "invalid": 1}
    assert (small.to_remove, small.to_render, len(small.problems)) == (2, 7, 1)
