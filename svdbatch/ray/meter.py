"""``RayMetrics``: the ``svdbatch_*`` metrics (run/metrics.py) of one process, the driver or an actor, recorded
through ``ray.util.metrics``. Kept apart from actors.py so the driver records them without importing the
generation stage (and torch)."""

from __future__ import annotations

from svdbatch.run import metrics
from svdbatch.spec.config import JobSpec


class RayMetrics:
    """The ``svdbatch_*`` metrics (metrics.METRICS) of one process, the driver or a generation actor, through
    ``ray.util.metrics``: the node's Ray metrics agent exports them on its Prometheus endpoint, with these tags."""

    def __init__(self, spec: JobSpec, run_id: str, node_id: str | None = None):
        import ray
        from ray.util import metrics as ray_metrics

        node_id = node_id or ray.get_runtime_context().get_node_id()
        kinds = {"counter": ray_metrics.Counter, "gauge": ray_metrics.Gauge, "histogram": ray_metrics.Histogram}
        self.node_id = node_id
        self.tags = {"job": spec.output.url, "run_id": run_id, "node_id": node_id}
        self.metrics = {}
        for metric in metrics.METRICS:
            options = {"boundaries": list(metric.boundaries)} if metric.boundaries else {}
            self.metrics[metric.name] = kinds[metric.kind](
                metric.name, description=metric.description, tag_keys=metric.tags, **options
            )

    def record(self, observations: list[metrics.Observation]) -> None:
        from ray.util import metrics as ray_metrics

        for seen in observations:
            metric, tags = self.metrics[seen.metric], {**self.tags, **seen.tags}
            if isinstance(metric, ray_metrics.Histogram):
                metric.observe(seen.value, tags)
            elif isinstance(metric, ray_metrics.Gauge):
                metric.set(seen.value, tags)
            elif seen.value > 0:  # a Ray counter refuses to add 0
                metric.inc(seen.value, tags)
