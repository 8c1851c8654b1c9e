"""Multi-node for real: a local Ray cluster with a head and two GPU worker nodes (logical GPUs, CPU execution),
and the demo submitted with the real ``ray job submit`` CLI to a ``ray start`` head."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from helpers import make_spec, stop_group, stop_shared_ray, write_images, write_manifest
from s3_server import free_port

from svdbatch.ray import driver
from svdbatch.render.video import probe

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def multi_node():
    import ray
    from ray.cluster_utils import Cluster

    stop_shared_ray()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 0})
    workers = [cluster.add_node(num_cpus=1, num_gpus=2) for _ in range(2)]
    ray.init(address=cluster.address, logging_level="ERROR")
    cluster.wait_for_nodes()
    yield {node.node_id for node in workers}
    ray.shutdown()
    cluster.shutdown()


def test_actors_spread_over_nodes_and_gpus(multi_node, tmp_path):
    images = write_images(tmp_path / "images", 4)
    # Enough items that the job outlasts the actors' start-up: the first actor up runs three calls at once and would
    # render a handful of items alone before the others have loaded their model.
    manifest = write_manifest(tmp_path / "m.parquet", {"key": [f"k{i}" for i in range(24)], "image": images * 6})
    # compute.actors left at its default: the pool starts with one actor per GPU in the cluster (4), each pinned to
    # one logical GPU.
    compute = {"actors": {"min": 1}, "batch_size": 1, "cpus_per_actor": 0.2, "cpus_per_task": 0.1, "torch_threads": 1}
    spec = make_spec(manifest, tmp_path / "out", compute=compute)
    summary = driver.run(spec, progress=False)
    assert (summary.rendered, summary.failed) == (24, 0)
    rows = pq.read_table(tmp_path / "out" / "metadata").to_pylist()
    placements = {(row["node_id"], row["gpu_id"]) for row in rows}
    assert {node for node, _ in placements} <= multi_node
    assert len({node for node, _ in placements}) >= 2, placements
    assert len({gpu for _, gpu in placements}) >= 2, placements
    assert all(row["device"] == "cpu" for row in rows)  # logical GPUs: CPU execution underneath


def _ray_cli() -> str:
    return str(Path(sys.executable).with_name("ray"))


def _ray(*args: str, env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([_ray_cli(), *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def _wait_for_port(port: int, head: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert head.poll() is None, "ray start --head exited"
        with socket.socket() as probe_socket:
            if probe_socket.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise AssertionError(f"the head's dashboard did not open port {port}")


@contextlib.contextmanager
def head_node(env: dict, dashboard: int):
    """``ray start --head --block`` in a process group of its own: stopping it stops this cluster and no other."""
    ports = {
        "--port": free_port(),
        "--dashboard-port": dashboard,
        "--dashboard-agent-listen-port": free_port(),
        "--dashboard-agent-grpc-port": free_port(),
        "--runtime-env-agent-port": free_port(),
        "--metrics-export-port": free_port(),
    }
    options = [f"{flag}={port}" for flag, port in ports.items()]
    command = [_ray_cli(), "start", "--head", "--block", "--num-cpus", "2", "--dashboard-host", "127.0.0.1", *options]
    head = subprocess.Popen(
        command, env=env, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        _wait_for_port(dashboard, head)
        yield
    finally:
        stop_group(head, timeout_s=30)


def test_demo_submitted_with_ray_job_submit(ray_cluster, tmp_path):
    """``ray_cluster`` is a bystander: stopping the test's own head must leave every other Ray cluster running."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("RAY_")}
    env["RAY_AUTH_MODE"] = "disabled"  # a loopback-only test cluster
    # The cluster's `python` is the one svdbatch is installed in, as on a real node, whatever the caller's PATH.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    dashboard = free_port()
    with head_node(env, dashboard):
        demo_dir = tmp_path / "demo"
        submit = ["job", "submit", "--address", f"http://127.0.0.1:{dashboard}", "--working-dir", "."]
        submit += ["--runtime-env", "jobs/runtime_env.yaml", "--", "python", "-m", "svdbatch", "demo"]
        submit += ["--dir", str(demo_dir), "--images", "2", "--quiet"]
        for _ in range(30):  # the job agent comes up a few seconds after the dashboard
            submitted = _ray(*submit, env=env, timeout=600)
            if "No available agent" not in submitted.stdout + submitted.stderr:
                break
            time.sleep(2)
        assert submitted.returncode == 0, submitted.stdout[-3000:] + submitted.stderr[-3000:]
        assert "succeeded" in (submitted.stdout + submitted.stderr).lower()
        assert "4 ok, 0 failed" in submitted.stdout
        rows = pq.read_table(demo_dir / "output" / "metadata").to_pylist()
        assert len(rows) == 4 and {row["status"] for row in rows} == {"ok"}
        assert probe(rows[0]["video_uri"]).frames == 8
    assert ray_cluster.get(ray_cluster.remote(lambda: "still up").remote(), timeout=60) == "still up"
