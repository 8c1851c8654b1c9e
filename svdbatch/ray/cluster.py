"""Ray itself and the cluster's facts: starting or joining Ray as every command shows it, what the cluster has and
what its autoscaler can add (capacity.ClusterShape, whose rules capacity.py applies without Ray), the generation
pool's size and actor strategy, the job's Workers actor, and the free and wanted resources of a watchdog line.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from svdbatch.errors import JobError
from svdbatch.ray import internals
from svdbatch.run import capacity, stopping
from svdbatch.run.console import filter_native_notices
from svdbatch.run.workers import Workers
from svdbatch.spec.config import JobSpec

# Ray Data (2.60) runs the streaming repartition that cuts one block per pipeline call as tasks of 1 CPU, and offers
# no setting for it (the feed task it is fused into asks for the same): next to the actors, a node needs that CPU free
# or the job waits forever.
CUT_CPUS = 1.0
CALLS_PER_ACTOR = 3  # one generating, one loading, one writing
HEAD_TIMEOUT_S = 10.0  # for the head in RAY_ADDRESS to answer one call
TOKEN_HELP = (
    "give the cluster's token in RAY_AUTH_TOKEN, or in a file named by RAY_AUTH_TOKEN_PATH (default ~/.ray/auth_token)"
)


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
    internals.issue_log_level(logging.INFO if verbose else logging.ERROR)
    internals.no_cpu_warning(shown=verbose)


def init_ray(verbose: bool = False) -> None:
    """Join the cluster named by RAY_ADDRESS (as under ``ray job submit``), once ``check_head`` found it answers, or
    start a local one."""
    import ray
    from ray.exceptions import RayError

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    level = logging.INFO if verbose else logging.WARNING
    internals.quiet_token_notice()
    # Workers' own output (library chatter) reaches the terminal only with --verbose: their failures come back as
    # exceptions or error rows.
    address = os.environ.get("RAY_ADDRESS")
    if address:
        check_head(address)
        try:
            ray.init(logging_level=level, log_to_driver=verbose)
        except (ConnectionError, RayError) as error:  # the head went away after check_head, or another refusal
            first = (str(error).strip().splitlines() or [""])[0]
            cause = f"{type(error).__name__}: {first}"
            raise JobError(f"RAY_ADDRESS={address}: could not join the Ray cluster ({cause})") from error
    else:
        # "local": a cluster of our own. Without it Ray joins whatever `ray start` cluster runs on this machine.
        # Workers start as tasks need them: Ray's default starts one per logical CPU up front, 32 idle processes
        # (~5 GiB) on a node that says it has 32 CPUs, and the raylet warns about the start-up storm.
        ray.init(
            address="local",
            include_dashboard=False,
            logging_level=level,
            log_to_driver=verbose,
            _system_config={"prestart_worker_first_driver": False},
        )


def check_head(address: str) -> None:
    """Fail in one line, naming what to set, when the head in RAY_ADDRESS cannot be joined: nothing answers, or it
    wants a token this process lacks. ``ray.init`` would retry for ~20 s, its C++ client logging every try, then
    raise a traceback. Addresses other than host:port ("auto", ray://) are left to Ray."""
    if "://" in address or ":" not in address:
        return
    token_mode, token = internals.token_auth()
    if token_mode and not token:
        raise JobError(f"RAY_AUTH_MODE=token but no token found: {TOKEN_HELP}")
    refusal = internals.gcs_refusal(address, HEAD_TIMEOUT_S)
    if refusal is None:
        return
    code, details = refusal
    if code == "UNAUTHENTICATED" and not token_mode:
        needs = "the Ray head requires token authentication: set RAY_AUTH_MODE=token and"
        raise JobError(f"RAY_ADDRESS={address}: {needs} {TOKEN_HELP}")
    if code == "UNAUTHENTICATED":
        raise JobError(f"RAY_ADDRESS={address}: the Ray head refused this process's token: {TOKEN_HELP}")
    if code == "DEADLINE_EXCEEDED":
        raise JobError(f"RAY_ADDRESS={address}: no answer from a Ray head within {HEAD_TIMEOUT_S:g} s")
    raise JobError(
        f"RAY_ADDRESS={address}: no Ray head answers there ({code}: {details}); give the head's GCS address "
        "(host:port, the port `ray start --head --port` set, 6379 by default)"
    )


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
