"""Ray itself and the cluster's facts: starting or joining Ray as every command shows it, what the cluster has and
what its autoscaler can add (capacity.ClusterShape, whose rules capacity.py applies without Ray), the generation
pool's size and actor strategy, the job's Workers actor, and the free and wanted resources of a watchdog line.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from svdbatch import capacity, stopping
from svdbatch.config import JobSpec
from svdbatch.console import filter_native_notices
from svdbatch.errors import JobError
from svdbatch.ray import internals
from svdbatch.workers import Workers

# Ray Data (2.60) runs the streaming repartition that cuts one block per pipeline call as tasks of 1 CPU, and offers
# no setting for it (the feed task it is fused into asks for the same): next to the actors, a node needs that CPU free
# or the job waits forever.
CUT_CPUS = 1.0
CALLS_PER_ACTOR = 3  # one generating, one loading, one writing


def configure_progress(context: Any, progress: bool, verbose: bool) -> None:
    """Ray Data's live per-stage bars on a terminal only, and none of their notices.

    Ray's defaults draw nothing in a driver (its tqdm relays through the log monitor) and log the bars' state
    ("progress bars disabled", "logged because not a terminal") as warnings: noise for a batch job.
    """
    live = progress and sys.stderr.isatty()
    context.enable_progress_bars = live
    context.enable_operator_progress_bars = live
    context.enable_rich_progress_bars = True
    context.use_ray_tqdm = False
    context.verbose_stats_logs = verbose
    logging.getLogger("ray.data").setLevel(logging.INFO if verbose else logging.WARNING)
    internals.progress_log_level(logging.INFO if verbose else logging.ERROR)


def init_ray(verbose: bool = False) -> None:
    """Join the cluster named by RAY_ADDRESS (as under ``ray job submit``), or start a local one."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    level = logging.INFO if verbose else logging.WARNING
    internals.quiet_token_notice()
    # Workers' own output (library chatter) reaches the terminal only with --verbose: their failures come back as
    # exceptions or error rows.
    if os.environ.get("RAY_ADDRESS"):
        ray.init(logging_level=level, log_to_driver=verbose)
    else:
        # "local": a cluster of our own. Without it Ray joins whatever `ray start` cluster runs on this machine.
        ray.init(address="local", include_dashboard=False, logging_level=level, log_to_driver=verbose)


def start_ray(verbose: bool, progress: bool, cli: bool) -> None:
    """Ray as every command shows it (run, demo, plan): started or joined, its native notices filtered out of the
    command's stderr (``cli``, unless ``verbose``), Ray Data's bars on a terminal only and none of its INFO lines."""
    from ray.data import DataContext

    with stopping.ray_starting():
        init_ray(verbose)
    if cli and not verbose:
        filter_native_notices()
    configure_progress(DataContext.get_current(), progress, verbose)


def cluster_shape() -> capacity.ClusterShape:
    """Alive nodes, and the node types the autoscaler can add: published by autoscaler v2 (KubeRay); v1 runs
    without publishing them (node_types None); neither runs on a fixed cluster (no node types)."""
    import ray

    alive = [node for node in ray.nodes() if node["Alive"]]
    nodes = [dict(node["Resources"]) for node in alive]
    groups = internals.node_groups()
    if groups is not None:
        return capacity.ClusterShape(nodes, [capacity.NodeType(*group) for group in groups])
    # Without an autoscaling config the monitor still reports, with one read-only type per node: "node_<node id>".
    report = internals.autoscaler_status().get("autoscaler_report") or {}
    names = set(report.get("active_nodes") or {}) | set(report.get("pending_launches") or {})
    read_only = {f"node_{node['NodeID']}" for node in alive}
    return capacity.ClusterShape(nodes, None if names - read_only else [])


def prepare_pool(spec: JobSpec) -> tuple[bool, capacity.PoolSize]:
    """Whether the actors ask for GPUs, and the pool's size; a job that cannot run here fails now, in one line."""
    shape = cluster_shape()
    try:
        gpu = capacity.check_device(spec.model, shape)
        capacity.check_fits(spec.compute, shape, gpu, CUT_CPUS)
    except capacity.CapacityError as error:
        raise JobError(str(error)) from error
    return gpu, capacity.pool_size(spec.compute, shape, gpu)


def pool_strategy(pool: capacity.PoolSize):
    """The generation pool; each actor runs CALLS_PER_ACTOR calls at once on threads (RenderVideos): one generates,
    the others load or write, so the device does not wait for the CPU work around it."""
    from ray.data import ActorPoolStrategy

    if pool.min == pool.max:
        sizes = {"size": pool.min}
    else:
        sizes = {"min_size": pool.min, "max_size": pool.max, "initial_size": pool.initial}
    return ActorPoolStrategy(**sizes, max_concurrent_calls_per_actor=CALLS_PER_ACTOR, enable_true_multi_threading=True)


def start_workers():
    """The job's Workers actor, on the driver's node (it lives as long as the driver's run)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    return ray.remote(num_cpus=0, scheduling_strategy=here)(Workers).remote()


def pending() -> str:
    """Free resources, and the resource demand the autoscaler sees, for a watchdog line."""
    import ray

    total, free = ray.cluster_resources(), ray.available_resources()
    parts = [f"{name} {free.get(name, 0):g}/{total.get(name, 0):g} free" for name in ("CPU", "GPU")]
    demand = internals.autoscaler_status().get("load_metrics_report", {}).get("resource_demand") or []
    if demand:
        parts.append("waiting: " + ", ".join(f"{count} x {bundle}" for bundle, count in demand))
    return ", ".join(parts)
