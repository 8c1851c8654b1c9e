"""Elastic clusters for real: Ray's fake autoscaler adds GPU nodes for a pool that asks for them, and a worker node
removed mid-job (spot preemption) loses nothing. Logical GPUs, CPU execution underneath."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from helpers import make_spec, stop_shared_ray, write_images, write_manifest
from s3_server import free_port

from svdbatch.errors import JobError
from svdbatch.ray import driver, internals

SMALL = {"batch_size": 1, "cpus_per_actor": 0.25, "cpus_per_task": 0.25, "torch_threads": 1}


def _autoscaling_cluster_class():
    from ray.cluster_utils import AutoscalingCluster

    class LocalAutoscalingCluster(AutoscalingCluster):
        """Ray's fake multi-node autoscaling cluster, with the config its wheel lacks, on its own port, stopped
        through its own process group: Ray's own start()/shutdown() force-stop every Ray process on the
        machine."""

        def __init__(self, head_resources: dict, worker_node_types: dict):
            self.port = free_port()
            super().__init__(head_resources, worker_node_types)
            self.process: subprocess.Popen | None = None

        def _generate_config(self, head_resources, worker_node_types, autoscaler_v2=False, **config_kwargs):
            return {
                "cluster_name": "fake_multinode",
                "max_workers": 8,
                "upscaling_speed": 10,
                "idle_timeout_minutes": 1,
                "provider": {
                    "type": "fake_multinode",
                    "use_node_id_as_ip": True,
                    "disable_node_updaters": True,
                    "disable_launch_config_check": True,
                    "gcs_address": f"127.0.0.1:{self.port}",
                },
                "auth": {"ssh_user": "ubuntu"},
                "docker": {},
                "head_node_type": "ray.head.default",
                "available_node_types": {
                    **worker_node_types,
                    "ray.head.default": {"resources": head_resources, "node_config": {}, "max_workers": 0},
                },
                "file_mounts": {},
                "cluster_synced_files": [],
                "file_mounts_sync_continuously": False,
                "rsync_exclude": [],
                "rsync_filter": [],
                "initialization_commands": [],
                "setup_commands": [],
                "head_setup_commands": [],
                "worker_setup_commands": [],
                "head_start_ray_commands": [],
                "worker_start_ray_commands": [],
            }

        def start(self, _system_config=None, override_env=None):
            config = Path(tempfile.mkdtemp()) / "autoscaling.json"
            config.write_text(json.dumps(self._config))
            head = self._config["available_node_types"]["ray.head.default"]["resources"]
            env = {name: value for name, value in os.environ.items() if not name.startswith("RAY_")}
            env.update(AUTOSCALER_UPDATE_INTERVAL_S="1", RAY_FAKE_CLUSTER="1", RAY_AUTH_MODE="disabled")
            ray_cli = str(Path(sys.executable).with_name("ray"))
            command = [ray_cli, "start", "--head", "--block", f"--port={self.port}", "--include-dashboard=false"]
            command += [f"--num-cpus={head.get('CPU', 0)}", f"--num-gpus={head.get('GPU', 0)}"]
            command.append(f"--autoscaling-config={config}")
            self.process = subprocess.Popen(command, env=env, start_new_session=True, stdout=subprocess.DEVNULL)

        def shutdown(self):
            if self.process is not None:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    return LocalAutoscalingCluster


@contextlib.contextmanager
def _autoscaling_cluster(max_gpu_nodes: int):
    """A CPU-only head and a GPU node type (2 logical GPUs, min 0) that only the autoscaler can add."""
    import ray

    cluster = _autoscaling_cluster_class()(
        head_resources={"CPU": 1},
        worker_node_types={
            "gpu": {
                "resources": {"CPU": 1, "GPU": 2},
                "node_config": {},
                "min_workers": 0,
                "max_workers": max_gpu_nodes,
            }
        },
    )
    stop_shared_ray()
    cluster.start()
    try:
        for _ in range(60):  # the head comes up, then its autoscaler publishes its first report
            try:
                if not ray.is_initialized():
                    ray.init(address=f"127.0.0.1:{cluster.port}", logging_level="ERROR")
                if internals.autoscaler_status().get("autoscaler_report"):
                    break
            except ConnectionError:
                pass
            time.sleep(1)
        yield ray
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture
def autoscaling(monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    with _autoscaling_cluster(max_gpu_nodes=2) as ray:
        yield ray


def test_pool_on_an_autoscaling_cluster_with_no_gpu_node_gets_gpu_nodes(autoscaling, tmp_path):
    head = autoscaling.get_runtime_context().get_node_id()
    assert autoscaling.cluster_resources().get("GPU", 0) == 0
    images = write_images(tmp_path / "images", 4)
    manifest = write_manifest(tmp_path / "m.parquet", {"key": [f"k{i}" for i in range(16)], "image": images * 4})
    # Default device (auto); a pool of two actors, both needing GPUs the cluster does not have yet. Enough items that
    # the first actor up cannot finish them all before the second has loaded its model.
    spec = make_spec(manifest, tmp_path / "out", compute={**SMALL, "actors": {"min": 2, "max": 2}})
    summary = driver.run(spec, progress=False)
    assert (summary.rendered, summary.failed) == (16, 0)
    rows = pq.read_table(tmp_path / "out" / "metadata").to_pylist()
    placements = {(row["node_id"], row["gpu_id"]) for row in rows}
    assert None not in {gpu for _, gpu in placements} and head not in {node for node, _ in placements}
    record = json.loads((tmp_path / "out" / "_job" / "summary.json").read_text())
    assert len(placements) >= 2, (placements, record["workers"])
    assert {worker["node_id"] for worker in record["workers"]} <= {node for node, _ in placements}


def test_gpu_job_waits_for_gpu_workers_with_a_word_and_gives_up_after_gpu_wait_s(monkeypatch, tmp_path):
    """The driver in a process of its own (a job the watchdog ends leaves Ray Data's executor thread behind)."""
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    images = write_images(tmp_path / "images", 1)
    manifest = write_manifest(tmp_path / "m.parquet", {"key": ["k0"], "image": images})
    # Ray's v1 autoscaler does not say which node types it has: GPUs may come, so the job waits, and says so.
    spec = make_spec(manifest, tmp_path / "out", compute={**SMALL, "gpu_wait_s": 12})
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(spec.model_dump(mode="json")))
    with _autoscaling_cluster(max_gpu_nodes=0) as ray:
        env = {name: value for name, value in os.environ.items() if not name.startswith("RAY_")}
        env.update(RAY_ADDRESS=ray.get_runtime_context().gcs_address, RAY_AUTH_MODE="disabled")
        command = [sys.executable, "-m", "svdbatch", "run", str(job)]
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr[-2000:]
    assert re.search(r"no GPU worker came up within 12 s \(compute.gpu_wait_s\); CPU", result.stderr), result.stderr
    assert re.search(r"svdbatch: waiting for GPU workers: 0/1 up, \d+ s", result.stderr), result.stderr[-2000:]


@pytest.fixture
def gpu_worker_node():
    """A CPU-only head and one worker node with one logical GPU."""
    import ray
    from ray.cluster_utils import Cluster

    stop_shared_ray()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 0})
    worker = cluster.add_node(num_cpus=1, num_gpus=1)
    ray.init(address=cluster.address, logging_level="ERROR")
    cluster.wait_for_nodes()
    yield cluster, worker
    ray.shutdown()
    cluster.shutdown()


def test_node_removed_mid_job_loses_and_repeats_nothing_and_a_new_node_takes_over(gpu_worker_node, tmp_path):
    cluster, doomed = gpu_worker_node
    keys = [f"k{i}" for i in range(8)]
    images = write_images(tmp_path / "images", 4)
    manifest = write_manifest(tmp_path / "m.parquet", {"key": keys, "image": images * 2})
    spec = make_spec(manifest, tmp_path / "out", compute={**SMALL, "actors": 1})
    outcome: dict = {}
    job = threading.Thread(target=lambda: outcome.update(summary=driver.run(spec, progress=False)), daemon=True)
    job.start()
    videos = tmp_path / "out" / "videos"
    while job.is_alive() and len(list(videos.rglob("*.mp4")) if videos.exists() else []) < 2:
        time.sleep(0.5)
    cluster.remove_node(doomed, allow_graceful=False)  # spot preemption: the node and its actor are gone mid-job
    fresh = cluster.add_node(num_cpus=1, num_gpus=1)  # the only place the actor can come back
    job.join(timeout=600)
    assert outcome["summary"].rendered == 8 and outcome["summary"].failed == 0
    rows = pq.read_table(tmp_path / "out" / "metadata").to_pylist()
    assert Counter(row["key"] for row in rows) == Counter(keys)  # 0 lost, 0 duplicated
    assert {row["status"] for row in rows} == {"ok"}
    assert {row["node_id"] for row in rows} <= {doomed.node_id, fresh.node_id}
    assert fresh.node_id in {row["node_id"] for row in rows}  # the new node picked up the rest


# The tests below use the session's shared 2-CPU local cluster (conftest's ray_cluster).


@pytest.mark.parametrize(
    ("sections", "line"),
    [
        ({"compute": {"cpus_per_actor": 2, "cpus_per_task": 1}}, "compute.cpus_per_actor: 2 leaves no room for the tasks that feed the actors"),
        ({"compute": {"cpus_per_actor": 4}}, "compute.cpus_per_actor: 4 fits no node"),
        ({"model": {"device": "cuda"}}, "model.device: cuda needs a GPU, but the cluster has none"),
    ],
)
def test_job_that_cannot_run_on_the_cluster_fails_before_any_work(ray_cluster, tmp_path, sections, line):
    images = write_images(tmp_path / "images", 1)
    manifest = write_manifest(tmp_path / "m.parquet", {"key": ["k0"], "image": images})
    spec = make_spec(manifest, tmp_path / "out", **sections)
    with pytest.raises(JobError, match=line):
        driver.run(spec, progress=False)
    assert not (tmp_path / "out" / "videos").exists()


def test_job_where_nothing_finishes_ends_after_the_stall_timeout(tmp_path):
    """In a process of its own, as a user runs it: a job the watchdog ends leaves Ray Data's executor thread behind
    until the process exits, which must not outlive into other tests."""
    images = write_images(tmp_path / "images", 1)
    manifest = write_manifest(tmp_path / "m.parquet", {"key": ["k0"], "image": images})
    # Loading the model alone takes longer than this stall timeout.
    spec = make_spec(manifest, tmp_path / "out", compute={"stall_report_s": 0.5, "stall_timeout_s": 1})
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(spec.model_dump(mode="json")))
    env = {name: value for name, value in os.environ.items() if not name.startswith("RAY_")}
    command = [sys.executable, "-m", "svdbatch", "run", str(job), "--quiet"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr[-2000:]
    line = re.search(r"no item finished for \d+ s \(compute.stall_timeout_s\); CPU ", result.stderr)
    assert line, result.stderr[-2000:]
