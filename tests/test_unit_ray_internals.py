"""Every Ray internal svdbatch relies on (svdbatch/ray/internals.py) is where and what it was on the Ray release it
was checked on: each symbol, field, signature and logger is imported and inspected here, without a cluster, so a Ray
upgrade that moves one fails this test by name instead of quietly breaking a run."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import logging
import re
import threading
from pathlib import Path
from types import SimpleNamespace

from svdbatch.ray import internals

INTERNALS = Path(internals.__file__)


def test_every_function_names_the_ray_version_it_was_checked_on():
    tree = ast.parse(INTERNALS.read_text())
    functions = [node for node in tree.body if isinstance(node, ast.FunctionDef)]
    assert functions
    for function in functions:
        assert f"Checked on Ray {internals.RAY_CHECKED}" in ast.get_docstring(function), function.name


def test_the_v1_autoscaler_status_key_and_reader():
    from ray._private import ray_constants
    from ray.experimental import internal_kv

    assert isinstance(ray_constants.DEBUG_AUTOSCALING_STATUS, str)
    assert "key" in inspect.signature(internal_kv._internal_kv_get).parameters


def test_the_v1_autoscaler_status_fields():
    from ray.autoscaler._private import monitor
    from ray.autoscaler._private.autoscaler import AutoscalerSummary
    from ray.autoscaler._private.util import LoadMetricsSummary

    source = inspect.getsource(monitor)
    assert "DEBUG_AUTOSCALING_STATUS" in source
    assert 'status["autoscaler_report"]' in source and 'status["load_metrics_report"]' in source
    assert {"active_nodes", "pending_launches"} <= {field.name for field in dataclasses.fields(AutoscalerSummary)}
    assert "resource_demand" in {field.name for field in dataclasses.fields(LoadMetricsSummary)}


def test_the_published_node_groups():
    import ray._private.state
    from ray.core.generated import autoscaler_pb2

    assert callable(ray._private.state.state.get_cluster_config)
    assert "node_group_configs" in autoscaler_pb2.ClusterConfig.DESCRIPTOR.fields_by_name
    assert {"name", "resources", "max_count"} <= set(autoscaler_pb2.NodeGroupConfig.DESCRIPTOR.fields_by_name)


def test_ray_data_executions_are_threads_that_shut_down_by_force():
    from ray.data._internal.execution.streaming_executor import StreamingExecutor

    assert issubclass(StreamingExecutor, threading.Thread)
    assert "force" in inspect.signature(StreamingExecutor.shutdown).parameters


def test_the_quieted_loggers_are_the_modules_loggers():
    for name in (internals.TOKEN_SETUP_LOGGER, internals.PROGRESS_LOGGER, internals.ISSUE_LOGGER):
        module = importlib.import_module(name)
        assert module.logger is logging.getLogger(name), name


def test_the_no_cpu_warning_is_dropped_unless_verbose_and_is_rays_own_text():
    from ray.data import dataset

    joined = re.sub(r'"\s*\n\s*"', "", inspect.getsource(dataset))  # Ray writes the text as adjacent literals
    assert f'logger.warning(\n{" " * 20}"{internals.NO_CPU_WARNING}' in joined
    assert dataset.logger is logging.getLogger(internals.DATASET_LOGGER)
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    handler = Keep()
    dataset.logger.addHandler(handler)
    try:
        for shown in (False, True):
            internals.no_cpu_warning(shown)
            dataset.logger.warning(internals.NO_CPU_WARNING + ". The Dataset job will hang ...")
            dataset.logger.warning("another warning")
    finally:
        dataset.logger.removeHandler(handler)
        internals.no_cpu_warning(True)
    assert [message.split(".")[0] for message in records] == [
        "another warning", internals.NO_CPU_WARNING, "another warning"
    ]


def test_the_data_context_settings_configure_progress_writes_exist():
    """Public, but a field Ray drops would be set silently on the context object: check them by name too."""
    from ray.data import DataContext

    from svdbatch.ray.cluster import configure_progress

    written = SimpleNamespace()
    configure_progress(written, progress=False, verbose=False)
    assert set(vars(written)) <= {field.name for field in dataclasses.fields(DataContext)}


def test_the_backpressure_policy_hook_and_the_row_counts_it_reads():
    from ray.data._internal.execution import backpressure_policy
    from ray.data._internal.execution.interfaces.op_runtime_metrics import OpRuntimeMetrics
    from ray.data._internal.execution.interfaces.physical_operator import PhysicalOperator
    from ray.data._internal.execution.streaming_executor_state import (
        get_eligible_operators,
        process_completed_tasks,
    )

    assert backpressure_policy.ENABLED_BACKPRESSURE_POLICIES_CONFIG_KEY == "backpressure_policies.enabled"
    built_from = inspect.getsource(backpressure_policy.get_backpressure_policies)
    assert "ENABLED_BACKPRESSURE_POLICIES_CONFIG_KEY" in built_from
    base = backpressure_policy.BackpressurePolicy
    assert list(inspect.signature(base.__init__).parameters) == ["self", "data_context", "topology", "resource_manager"]
    assert {"can_add_input", "max_task_output_bytes_to_read"} <= set(vars(base))
    assert "p.can_add_input(op)" in inspect.getsource(get_eligible_operators)
    assert "max_task_output_bytes_to_read" in inspect.getsource(process_completed_tasks)
    fields = {field.name for field in dataclasses.fields(OpRuntimeMetrics)}
    assert {"rows_task_outputs_generated", "rows_inputs_of_submitted_tasks"} <= fields
    assert isinstance(PhysicalOperator.name, property) and isinstance(PhysicalOperator.input_dependencies, property)


def test_limit_rows_ahead_adds_its_policy_once_to_ray_datas_own():
    from ray.data import DataContext
    from ray.data._internal.execution import backpressure_policy

    context = DataContext()
    internals.limit_rows_ahead(context, "Consumer", 10)
    internals.limit_rows_ahead(context, "Consumer", 20)
    policies = context.get_config(backpressure_policy.ENABLED_BACKPRESSURE_POLICIES_CONFIG_KEY)
    assert policies[:-1] == backpressure_policy.ENABLED_BACKPRESSURE_POLICIES
    assert policies[-1].__name__ == "RowsAhead" and issubclass(policies[-1], backpressure_policy.BackpressurePolicy)
    assert context.output_backpressure_guard_release_interval_s == internals.GUARD_RELEASE_S
    fields = {field.name for field in dataclasses.fields(DataContext)}  # public, but set silently if Ray drops them
    assert {"output_backpressure_guard_release_interval_s", "target_max_block_size"} <= fields


def test_token_auth_reads_the_mode_and_finds_the_token_as_ray_does(tmp_path):
    """In a child process: Ray caches the auth mode a process first read (this one's is "disabled")."""
    import os
    import subprocess
    import sys

    probe = "from svdbatch.ray import internals; print(internals.token_auth())"
    env = {name: value for name, value in os.environ.items() if not name.startswith("RAY_")} | {"HOME": str(tmp_path)}
    token_file = tmp_path / "token"
    token_file.write_text("a-token")
    cases = [
        ({}, "(False, False)"),
        ({"RAY_AUTH_MODE": "token"}, "(True, False)"),
        ({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "a-token"}, "(True, True)"),
        ({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_file)}, "(True, True)"),
    ]
    for variables, expected in cases:
        done = subprocess.run([sys.executable, "-c", probe], env=env | variables, capture_output=True, text=True)
        assert done.stdout.strip() == expected, (variables, done.stderr[-2000:])


def test_gcs_refusal_asks_the_gcs_service_ray_init_waits_on():
    from ray._raylet import AuthenticationTokenLoader
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc
    from s3_server import free_port

    assert "GetClusterId" in inspect.getsource(gcs_service_pb2_grpc.NodeInfoGcsServiceStub)
    assert gcs_service_pb2.GetClusterIdRequest().SerializeToString() == b""
    for name in ("instance", "has_token", "get_token_for_http_header"):
        assert callable(getattr(AuthenticationTokenLoader, name)), name
    code, details = internals.gcs_refusal(f"127.0.0.1:{free_port()}", 10.0)
    assert code == "UNAVAILABLE" and "Connection refused" in details
