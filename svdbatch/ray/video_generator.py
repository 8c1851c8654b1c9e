"""The generation actor's VideoGenerator: ``RayVideoGenerator`` stamps node and GPU ids on rows, reports to the job's
Workers actor and leaves its process when its device is lost, so Ray restarts it and retries its items.

Its own module because it imports torch (render/generate.py): only the actor processes load it (actors.py's
``RayRenderer`` imports it when it starts), so the driver, which names ``RayRenderer`` in the plan, stays light.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any

from svdbatch.items.metadata import fail
from svdbatch.render import faults
from svdbatch.render.generate import DeviceLost, VideoGenerator
from svdbatch.spec.config import JobSpec

# How long an actor that gave up on a poisoned device's items lives on, so that the call that failed them gets its
# rows to the driver: Ray ships a call's result after the call returns, and other calls run beside it on threads.
EXIT_AFTER_S = 5.0


class RayVideoGenerator(VideoGenerator):
    """VideoGenerator on a Ray actor: stamps node and GPU ids on rows, reports its load time, and exits on a lost
    device so Ray restarts it and retries its items on a fresh process."""

    def __init__(self, spec: JobSpec, workers_actor, job_started: float):
        import ray

        began = time.time()
        super().__init__(spec)
        self.workers_actor = workers_actor
        self.exiting = False
        gpu_ids = ray.get_gpu_ids()
        self.placement.update(
            node_id=ray.get_runtime_context().get_node_id(),
            gpu_id=",".join(str(gpu) for gpu in gpu_ids) if gpu_ids else None,
        )
        ready = time.time()
        self.load_seconds = round(ready - began, 3)
        workers_actor.add.remote(
            {
                "node_id": self.placement["node_id"],
                "gpu_id": self.placement["gpu_id"],
                "device": self.device,
                "load_seconds": self.load_seconds,
                "ready_after_seconds": round(ready - job_started, 3),
                "model_copy": self.model_copy,
            }
        )

    def __call__(self, batch):
        if self.exiting:
            threading.Event().wait()  # the exit timer ends this process; this call's items are retried elsewhere
        return super().__call__(batch)

    def device_lost(self, lost: DeviceLost, unrendered: list[dict[str, Any]]) -> None:
        import ray

        lost_actors = ray.get(self.workers_actor.lose.remote([f"{row['key']}#{row['variant']}" for row in unrendered]))
        where = f"node {self.placement['node_id']}, GPU {self.placement['gpu_id']}"
        print(f"svdbatch: {lost} ({where}); this actor exits and its items are retried", file=sys.stderr, flush=True)
        if self.exiting:
            threading.Event().wait()
        if lost_actors < faults.MAX_ACTORS_LOST:
            os._exit(1)
        for row in unrendered:
            fail(row, f"generate {row['key']!r} v{row['variant']}: {lost} (on {lost_actors} fresh actors)")
        self.exiting = True
        threading.Timer(EXIT_AFTER_S, os._exit, args=(1,)).start()
