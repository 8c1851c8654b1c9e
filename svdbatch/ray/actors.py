"""The generation pool's actor class, free of torch.

``RayRenderer`` is the class Ray Data starts as the pool's actors (tests find its processes by that name):
RenderVideos around a ``RayVideoGenerator`` (video_generator.py), which it imports when it starts, in the actor's
process: the driver names this class in the plan without loading torch. Each actor records its ``svdbatch_*`` metrics
through meter.py's ``RayMetrics``.
"""

from __future__ import annotations

import pyarrow as pa

from svdbatch.ray.meter import RayMetrics
from svdbatch.render.stages import RenderVideos
from svdbatch.run import metrics
from svdbatch.spec.config import JobSpec


class RayRenderer(RenderVideos):
    """The actor class of the generation pool: RenderVideos around a RayVideoGenerator, recording the metrics of
    what it renders (stage seconds, GPU-seconds) and of its start in this process."""

    def __init__(self, spec: JobSpec, workers_actor, job_started: float, run_id: str):
        import ray

        from svdbatch.ray.video_generator import RayVideoGenerator  # torch: in the actor's process only

        generator = RayVideoGenerator(spec, workers_actor, job_started)
        super().__init__(spec, generator)
        self.gpus = spec.compute.gpus_per_actor
        self.meter = RayMetrics(spec, run_id, generator.placement["node_id"])
        restarted = ray.get_runtime_context().was_current_actor_reconstructed
        self.meter.record(metrics.actor_start_observations(generator.load_seconds, restarted, self.gpus))

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = super().__call__(batch)
        self.meter.record(metrics.rendered_observations(rows, self.gpus))
        return rows
