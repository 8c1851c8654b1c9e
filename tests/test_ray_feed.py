"""The feed waits for the generation pool: on a real Ray Data pipeline shaped like the render path (one fused task
that makes rows and cuts them into one-row blocks, then a slow actor pool), the rows made but not yet taken stay
within the window of ``internals.limit_rows_ahead``; without it the same pipeline makes them all ahead."""

from __future__ import annotations

import sys
import time

import pyarrow as pa
from ray import cloudpickle

from svdbatch.ray import internals

ROWS = 300
WINDOW = 8
# Rows made but not yet taken beyond the window: a paused task's unread outputs (Ray Data's generator buffer of 2
# blocks, twice), and the blocks already submitted to the actor's calls.
SLACK = 12
# A stage's output is gathered into blocks of up to DataContext.target_max_block_size before the cut sees it: rows
# this large (over the test's small target) leave the stage one by one, so "made" counts rows the task has let go of.
PAYLOAD = "x" * 4096
TARGET_BLOCK_BYTES = 1024
cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray's workers cannot import a test module


class Tally:
    """Rows made and taken so far, and the most made ahead of the one being taken."""

    def __init__(self):
        self.made = self.taken = self.most_ahead = 0

    def make(self) -> None:
        self.made += 1

    def take(self) -> None:
        self.taken += 1
        self.most_ahead = max(self.most_ahead, self.made - self.taken)

    def ahead(self) -> int:
        return self.most_ahead


def make_rows(batch: pa.Table, tally):
    import ray

    for start in range(batch.num_rows):
        ray.get(tally.make.remote())
        yield batch.slice(start, 1).append_column("payload", pa.array([PAYLOAD]))


class SlowSink:
    def __init__(self, tally):
        self.tally = tally

    def __call__(self, batch: pa.Table) -> pa.Table:
        import ray

        ray.get(self.tally.take.remote())
        time.sleep(0.02)
        return batch


def _most_ahead(ray, limited: bool) -> int:
    tally = ray.remote(num_cpus=0)(Tally).remote()
    try:
        rows = ray.data.range(ROWS, override_num_blocks=1)  # a context of its own: a copy of the current one
        rows.context.target_max_block_size = TARGET_BLOCK_BYTES
        rows = rows.map_batches(make_rows, fn_args=(tally,), batch_format="pyarrow", batch_size=None, num_cpus=1)
        rows = rows.repartition(target_num_rows_per_block=1)
        if limited:
            internals.limit_rows_ahead(rows.context, SlowSink.__name__, WINDOW)
        taken = rows.map_batches(
            SlowSink, fn_constructor_args=(tally,), batch_format="pyarrow", batch_size=1, concurrency=1, num_cpus=0.5
        )
        assert taken.count() == ROWS
        return ray.get(tally.ahead.remote())
    finally:
        ray.kill(tally)


def test_rows_made_ahead_of_a_slow_pool_stay_within_the_window(ray_cluster):
    assert _most_ahead(ray_cluster, limited=True) <= WINDOW + SLACK
    assert _most_ahead(ray_cluster, limited=False) > 4 * (WINDOW + SLACK)  # the same pipeline, Ray Data's policies only


def _optimized_physical_plan(dataset, capsys) -> str:
    capsys.readouterr()
    dataset.explain()
    return capsys.readouterr().out.split("Physical Plan (Optimized)")[1]


def test_the_render_plan_feeds_the_pool_from_one_fused_task(ray_cluster, tmp_path, capsys):
    """Read, expand, the in-task resume join and the cut run as one task per manifest part (so the items between
    them never enter the object store); a Ray Data upgrade that stops fusing them fails here by name."""
    from helpers import make_spec, write_images, write_manifest

    from svdbatch.items import manifest
    from svdbatch.ray import dataset
    from svdbatch.render.feed import RunContext
    from svdbatch.run import capacity

    images = write_images(tmp_path / "images", 2)
    spec = make_spec(write_manifest(tmp_path / "manifest.parquet", {"key": ["a", "b"], "image": images}), tmp_path)
    info, run, pool = manifest.inspect(spec), RunContext("plan-test"), capacity.PoolSize(1, 1, 1)
    committed = dataset.Committed([ray_cluster.put(pa.table({"key": ["a"], "variant": [0]}))])
    for done in (None, committed):
        items, _ = dataset.joined_items(spec, info, run, done)
        plan = _optimized_physical_plan(dataset.video_rows(spec, items, False, pool, None, 0.0, "run"), capsys)
        # With committed rows the feed declares its memory and the cut, which takes none, runs in tasks of its own
        # (the driver materializes the decided items before the cut anyway).
        after = "->MapBatches(WithPieces.__call__)" if done else "->StreamingRepartition"
        feed = f"MapBatches(ReadParts.__call__)->MapBatches(ExpandRows.__call__){after}"
        assert f"TaskPoolMapOperator[{feed}" in plan, plan
        # the feed (and with committed rows, the cut)
        assert plan.count("TaskPoolMapOperator[") == (2 if done else 1), plan


def test_the_resume_decision_runs_in_the_feed_task(ray_cluster, tmp_path, capsys):
    """Read, expand, the in-task join and ResumeRows are one task per manifest part: only the items left to render
    (and one tally row) leave it, not every item of a 10M-row manifest through the object store."""
    from helpers import make_spec, write_images, write_manifest

    from svdbatch.items import manifest
    from svdbatch.ray import dataset
    from svdbatch.render.feed import ResumeRows, RunContext

    images = write_images(tmp_path / "images", 2)
    spec = make_spec(write_manifest(tmp_path / "manifest.parquet", {"key": ["a", "b"], "image": images}), tmp_path)
    committed = dataset.Committed([ray_cluster.put(pa.table({"key": ["a"], "variant": [0]}))])
    items, _ = dataset.joined_items(spec, manifest.inspect(spec), RunContext("plan-test"), committed)
    plan = _optimized_physical_plan(dataset.decided(items, ResumeRows(spec).__call__), capsys)
    feed = "MapBatches(ReadParts.__call__)->MapBatches(ExpandRows.__call__)->MapBatches(WithPieces.__call__)"
    assert f"TaskPoolMapOperator[{feed}->MapBatches(ResumeRows.__call__)]" in plan, plan
