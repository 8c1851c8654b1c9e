"""Every use of a Ray internal in svdbatch, one function each: private modules, the v1 autoscaler's debug key, Ray
Data's executor threads, and the loggers of private modules.

Ray promises none of these across releases. Each was checked on Ray 2.60.0 (``RAY_CHECKED``, written again on each
function), and tests/test_unit_ray_internals.py imports and inspects every symbol, field and logger they rely on, so
an upgrade that moves one fails that test by name instead of quietly breaking a run (a missing status reads as "no
autoscaler", a missing logger as noise, a missing executor class as a stop that no longer halts).
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

RAY_CHECKED = "2.60.0"
# Loggers of private Ray modules, each a ``logging.getLogger(__name__)`` of the module (checked on Ray 2.60.0).
TOKEN_SETUP_LOGGER = "ray._private.authentication.authentication_token_setup"
PROGRESS_LOGGER = "ray.data._internal.progress"
ISSUE_LOGGER = "ray.data._internal.issue_detection.issue_detector_manager"
DATASET_LOGGER = "ray.data.dataset"
NO_CPU_WARNING = "Warning: The Ray cluster currently does not have any available CPUs"
GUARD_RELEASE_S = 5.0


def quiet_token_notice() -> None:
    """A local cluster only listens on loopback: the notice its token-auth setup logs is noise for a batch job,
    verbose or not. Checked on Ray 2.60.0."""
    logging.getLogger(TOKEN_SETUP_LOGGER).setLevel(logging.ERROR)


def token_auth() -> tuple[bool, bool]:
    """(whether this process uses token authentication, whether it finds a token), as ``ray.init`` will.

    Checked on Ray 2.60.0: ``ray._raylet.get_authentication_mode()`` reads RAY_AUTH_MODE (an explicit address never
    turns it on by itself, ray/_private/worker.py); ``AuthenticationTokenLoader.instance().has_token(
    ignore_auth_mode=True)``, as ``ensure_token_if_auth_enabled`` asks it, looks in RAY_AUTH_TOKEN, then the file
    named by RAY_AUTH_TOKEN_PATH, then ~/.ray/auth_token (ray/_private/authentication/).
    The loader is asked only in token mode: a token it caches otherwise makes this process's own gRPC server demand
    it from the cluster's calls, which carry none ("Missing authorization header"), and actors die unstarted.
    """
    from ray._raylet import AuthenticationMode, AuthenticationTokenLoader, get_authentication_mode

    if get_authentication_mode() != AuthenticationMode.TOKEN:
        return False, False
    return True, AuthenticationTokenLoader.instance().has_token(ignore_auth_mode=True)  # has_token() raises if none


def gcs_refusal(address: str, timeout_s: float) -> tuple[str, str] | None:
    """Ask the GCS at ``address`` (host:port) for its cluster id, as ``ray.init`` first does, with the token headers
    Ray would send; None when it answers, else the gRPC status name and details. Ray's own client retries for ~20 s
    and logs each try from C++, straight to stderr; this one call logs nothing.

    Checked on Ray 2.60.0: ``ray.core.generated.gcs_service_pb2_grpc.NodeInfoGcsServiceStub.GetClusterId`` (what
    ray/_private/node.py's GcsClient waits on), and the token as gRPC metadata from
    ``AuthenticationTokenLoader.instance().get_token_for_http_header()`` (ray/_private/authentication/
    grpc_authentication_client_interceptor.py), sent only in token mode.
    """
    import grpc
    from ray._raylet import AuthenticationTokenLoader
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    _, token = token_auth()
    metadata = tuple(AuthenticationTokenLoader.instance().get_token_for_http_header().items()) if token else ()
    with grpc.insecure_channel(address) as channel:
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
        try:
            stub.GetClusterId(gcs_service_pb2.GetClusterIdRequest(), timeout=timeout_s, metadata=metadata)
        except grpc.RpcError as error:
            return error.code().name, error.details() or ""
    return None


def progress_log_level(level: int) -> None:
    """The level of Ray Data's progress-bar modules, which log the bars' state ("progress bars disabled", "logged
    because not a terminal") as warnings. Checked on Ray 2.60.0."""
    logging.getLogger(PROGRESS_LOGGER).setLevel(level)


class _WithoutNoCpuWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(NO_CPU_WARNING)


_NO_CPU_FILTER = _WithoutNoCpuWarning()


def no_cpu_warning(shown: bool) -> None:
    """Show (--verbose) or drop the warning ``Dataset.materialize`` logs when ``ray.available_resources()`` has no
    CPU at that instant, "the Dataset job will hang". It read the cluster's resource view a moment after the tasks
    that read the committed state ended and before the view caught up (10M rows on 2 CPUs): a false alarm there,
    and a job that truly gets no CPU is the watchdog's to report. Checked on Ray 2.60.0: logged once per process by
    ``ray.data.dataset.Dataset._execute`` on the module's logger."""
    logger = logging.getLogger(DATASET_LOGGER)
    logger.removeFilter(_NO_CPU_FILTER)
    if not shown:
        logger.addFilter(_NO_CPU_FILTER)


def issue_log_level(level: int) -> None:
    """The level of Ray Data's issue detector, which logs advice as warnings while a dataset runs ("uses 1.2GiB of
    memory per worker ... but Ray only requests 0.0B"): svdbatch declares its tasks' memory, and the advice about
    the tasks Ray Data cannot be told about is for --verbose. Checked on Ray 2.60.0."""
    logging.getLogger(ISSUE_LOGGER).setLevel(level)


def autoscaler_status() -> dict[str, Any]:
    """What Ray's v1 autoscaler publishes each update (its report and the pending resource demand); {} without one.

    Checked on Ray 2.60.0: the monitor (ray/autoscaler/_private/monitor.py) writes JSON to the internal KV under
    ``ray_constants.DEBUG_AUTOSCALING_STATUS``: "autoscaler_report" (an AutoscalerSummary: active_nodes,
    pending_launches) and "load_metrics_report" (a LoadMetricsSummary: resource_demand). Autoscaler v2 does not.
    """
    from ray._private.ray_constants import DEBUG_AUTOSCALING_STATUS
    from ray.experimental.internal_kv import _internal_kv_get

    raw = _internal_kv_get(DEBUG_AUTOSCALING_STATUS)
    return json.loads(raw) if raw else {}


def node_groups() -> list[tuple[str, dict[str, float], int]] | None:
    """The node groups autoscaler v2 (KubeRay) publishes: (name, resources, max count) each; None when it publishes
    none (a fixed cluster, or autoscaler v1).

    Checked on Ray 2.60.0: ``ray._private.state.state.get_cluster_config()`` returns an autoscaler_pb2.ClusterConfig
    or None; its ``node_group_configs`` are NodeGroupConfig messages with name, resources and max_count.
    """
    import ray._private.state

    config = ray._private.state.state.get_cluster_config()
    if config is None or not config.node_group_configs:
        return None
    return [(group.name, dict(group.resources), group.max_count) for group in config.node_group_configs]


def halt_executions() -> None:
    """End Ray Data's running executions now, from this thread: their tasks and actors stop and their iterators end.

    Ray Data ends an execution only from the thread that iterates it (the driver's results thread, blocked until the
    next batch), and an execution still running at ``ray.shutdown`` prints tracebacks from its threads.
    Checked on Ray 2.60.0: every execution is a ``StreamingExecutor``, a ``threading.Thread``, and its
    ``shutdown(force=True)`` may be called from any thread.
    """
    from ray.data._internal.execution.streaming_executor import StreamingExecutor

    for thread in threading.enumerate():
        if isinstance(thread, StreamingExecutor):
            thread.shutdown(force=True)


def limit_rows_ahead(context: Any, consumer: str, rows: int) -> None:
    """Hold each operator that feeds ``consumer`` (an operator whose name holds it) once ``rows`` rows it made wait
    for a ``consumer`` task: no new tasks, and its running tasks' outputs are not read, so they pause.

    Ray Data bounds what waits between operators in bytes only (its object-store budget, gigabytes): rows of half a
    kilobyte queue by the million ahead of a pool that renders one a second, and the object store grows with the job.
    Checked on Ray 2.60.0: the executor builds its policies from the DataContext config
    ``backpressure_policies.enabled`` (classes taking data_context, topology, resource_manager) and asks each
    ``can_add_input(op)`` and ``max_task_output_bytes_to_read(op)`` (0: read none); operators have ``name``,
    ``input_dependencies`` and the cumulative ``metrics.rows_task_outputs_generated`` and
    ``metrics.rows_inputs_of_submitted_tasks``.
    """
    from ray.data._internal.execution.backpressure_policy import (
        ENABLED_BACKPRESSURE_POLICIES,
        ENABLED_BACKPRESSURE_POLICIES_CONFIG_KEY,
        BackpressurePolicy,
    )

    class RowsAhead(BackpressurePolicy):
        def __init__(self, *args):
            super().__init__(*args)
            takers = [op for op in self._topology if consumer in op.name]
            self.consumer_of = {feed: taker for taker in takers for feed in taker.input_dependencies}

        def _full(self, op) -> bool:
            taker = self.consumer_of.get(op)
            if taker is None:
                return False
            return op.metrics.rows_task_outputs_generated - taker.metrics.rows_inputs_of_submitted_tasks >= rows

        def can_add_input(self, op) -> bool:
            return not self._full(op)

        def max_task_output_bytes_to_read(self, op) -> int | None:
            return 0 if self._full(op) else None

    # Ray Data's liveness guard reads one more output whenever the next stage has nothing running, which is every
    # loop while the pool's actors load their models: at most one such release per interval.
    context.output_backpressure_guard_release_interval_s = GUARD_RELEASE_S
    policies = context.get_config(ENABLED_BACKPRESSURE_POLICIES_CONFIG_KEY, ENABLED_BACKPRESSURE_POLICIES)
    kept = [policy for policy in policies if policy.__name__ != RowsAhead.__name__]
    context.set_config(ENABLED_BACKPRESSURE_POLICIES_CONFIG_KEY, [*kept, RowsAhead])
